"""Certificates for the webhook, the extender and kube-scheduler's client identity.

- :mod:`qosgate.certs.generate` — CA, serving and client certificates (``cryptography``), ensure/renew,
  caBundle, Secret manifest.
- :mod:`qosgate.certs.cli` — ``qosgate certs generate|ensure``.

Serving them (hardened TLS contexts, hot reload) is the serving layer's job: :mod:`qosgate.serving.tls`.
"""

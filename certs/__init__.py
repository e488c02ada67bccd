"""Certificates for the webhook and extender.

- :mod:`qosgate.certs.generate` — CA + serving certificate (``cryptography``), ensure/renew, caBundle, Secret manifest.
- :mod:`qosgate.certs.cli` — ``qosgate certs generate|ensure``.
- :mod:`qosgate.serving.tls` — uvicorn over HTTPS with certificate hot reload (:class:`qosgate.serving.tls.TLSServer`).

Nothing is imported here so ``import qosgate.certs.generate`` does not pull in uvicorn.
"""

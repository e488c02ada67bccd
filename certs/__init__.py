"""Certificates for the webhook and extender.

- :mod:`certs.generate` — CA + serving certificate (``cryptography``), ensure/renew, caBundle, Secret manifest.
- :mod:`certs.cli` — ``qosgate certs generate|ensure``.
- :mod:`certs.serving` — uvicorn over HTTPS with certificate hot reload (:class:`certs.serving.TLSServer`).

Nothing is imported here so ``import certs.generate`` does not pull in uvicorn.
"""

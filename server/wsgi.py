"""The WSGI entry point: ``assay serve --production`` (server/serve.py) serves ``app``.

Creating the app at import is right here and nowhere else: this is the module the server
imports in each worker. Configuration comes from the environment (see server/config.py and
deploy/README.md); this is production, so ASSAY_SECRET_KEY must be set and cookies are
HTTPS-only unless ASSAY_SECURE_COOKIES=0.

Behind a reverse proxy set ASSAY_TRUSTED_PROXIES to the number of proxies in front (1 for the
nginx of deploy/nginx.conf): the client address then comes from X-Forwarded-For, so that the
per-address rate limit on entry counts participants and not the proxy. Leave it 0 when clients
connect directly, or they could forge their address.

The access log (server/access_log.py) goes to stdout; ASSAY_ACCESS_LOG=0 turns it off behind a
proxy that logs requests already.
"""

from __future__ import annotations

import logging
import os

from werkzeug.middleware.proxy_fix import ProxyFix

from server.access_log import AccessLog, access_log_on
from server.app import create_app
from server.config import SECRET_VARIABLES

app = create_app({"PRODUCTION": True})  # requires ASSAY_SECRET_KEY; Secure cookies

# granian builds each request's WSGI environ on a copy of the worker's process environment.
# The app has read its secrets; dropping them here keeps them out of every request's environ,
# where an error reporter or a debugging aid that dumps the environ would show them. (The
# server's main process keeps them, for the workers it starts or replaces.)
for _name in SECRET_VARIABLES:
    os.environ.pop(_name, None)

if access_log_on():  # inside ProxyFix, so that it logs the client's address, not the proxy's
    app.wsgi_app = AccessLog(app.wsgi_app)
_proxies = int(os.environ.get("ASSAY_TRUSTED_PROXIES", "0"))
if _proxies:
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=_proxies, x_proto=_proxies, x_host=_proxies)

logging.getLogger(__name__).info("assay app ready in worker %d", os.getpid())

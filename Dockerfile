# webpolicy: the centre's web-filtering gateway (mitmproxy + the webpolicy add-on).
#
#   docker build -t webpolicy .
#   docker run -d --name webpolicy --network host \
#     -v /srv/webpolicy/etc:/etc/webpolicy:ro -v webpolicy-ca:/var/lib/webpolicy \
#     -v /srv/webpolicy/logs:/var/log/webpolicy webpolicy --set flow_detail=0
#
# (flow_detail=0: otherwise mitmdump prints every URL every user visits to `docker logs`.)
# Volumes: /etc/webpolicy (policy.yaml and blocklists/, read-only to the proxy),
# /var/lib/webpolicy (mitmproxy's confdir: the CA certificate and its PRIVATE KEY; keep it, or
# every device must be given a new CA; also mitmproxy/webpolicy-cache/, the compiled lists, a
# cache that makes restarts fast), /var/log/webpolicy (the safeguarding log: personal data).
# A policy mounted over /etc/webpolicy must say `logging: {directory: /var/log/webpolicy}` and,
# for Prometheus to reach it from outside the container, `metrics: {listen: 0.0.0.0:9464}`.
# Extra arguments go to mitmdump: `docker run ... webpolicy --listen-port 3128 --proxyauth @/etc/webpolicy/htpasswd`.
# Reload the policy without a restart: `docker kill --signal HUP webpolicy`.
#
# The safeguarding console, a second container from the same image on the same volumes (its
# database and key in the state volume), on loopback for an HTTPS reverse proxy on the host:
#   docker run -d --name webpolicy-console --network host \
#     -v /srv/webpolicy/etc:/etc/webpolicy:ro -v webpolicy-ca:/var/lib/webpolicy \
#     -v /srv/webpolicy/logs:/var/log/webpolicy --entrypoint webpolicy webpolicy \
#     console --policy /etc/webpolicy/policy.yaml \
#     --database /var/lib/webpolicy/console/webpolicy-console.sqlite3 --listen 127.0.0.1:8081
#   docker exec -it webpolicy-console webpolicy users add NAME --role dsl \
#     --policy /etc/webpolicy/policy.yaml --database /var/lib/webpolicy/console/webpolicy-console.sqlite3
# See docs/deployment.md.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY addons/ addons/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
LABEL org.opencontainers.image.title="webpolicy" \
      org.opencontainers.image.description="Web-filtering gateway for UK education and training providers (a mitmproxy add-on)"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEBPOLICY_HEALTHCHECK_PORT=8080 \
    WEBPOLICY_SOURCES_DIR=/var/lib/webpolicy/sources
# (last good copies of URL list sources: /etc/webpolicy is mounted read-only)

# The wheel's dependencies (mitmproxy 12, ...) come from its metadata (pyproject.toml), with
# the console extra (Django, django-axes, waitress): the same image runs the safeguarding
# console as a second container (see the top of this file).
COPY --from=build /wheels/ /tmp/wheels/
# (The wheel with its extra as a one-line requirements file: its dependencies are ranged in
# pyproject.toml, and no name is taken from PyPI unpinned beyond them.)
RUN printf '%s[console]\n' /tmp/wheels/webpolicy-*.whl > /tmp/wheels/requirements.txt \
 && pip install --no-cache-dir --requirement /tmp/wheels/requirements.txt \
 && rm -rf /tmp/wheels \
 && groupadd --system --gid 10001 webpolicy \
 && useradd --system --uid 10001 --gid webpolicy --home-dir /var/lib/webpolicy \
      --no-create-home --shell /usr/sbin/nologin webpolicy \
 && install -d -o webpolicy -g webpolicy -m 0700 \
      /var/lib/webpolicy /var/lib/webpolicy/mitmproxy /var/log/webpolicy

# The shipped starter policy and lists, owned by root: the proxy reads them but cannot change
# them.  In the image the safeguarding log goes to its own volume and metrics listen on the
# container's interfaces (publish port 9464 to the management network only).  The build fails
# if these edits did not take or the policy does not validate.
COPY policy.yaml /etc/webpolicy/policy.yaml
COPY blocklists/ /etc/webpolicy/blocklists/
RUN sed -i -e 's|^\(  directory:\) logs\b|\1 /var/log/webpolicy|' \
           -e 's|^\(  listen:\) 127\.0\.0\.1:9464|\1 0.0.0.0:9464|' /etc/webpolicy/policy.yaml \
 && python -c "import pathlib, webpolicy.policy.model as p; s = p.load_policy(pathlib.Path('/etc/webpolicy/policy.yaml')); assert str(s.logging.directory) == '/var/log/webpolicy' and s.metrics.host == '0.0.0.0', 'policy.yaml: logging.directory / metrics.listen not rewritten'" \
 && webpolicy validate /etc/webpolicy/policy.yaml

VOLUME ["/etc/webpolicy", "/var/lib/webpolicy", "/var/log/webpolicy"]
WORKDIR /var/lib/webpolicy
USER 10001:10001

# 8080: the proxy.  9464: Prometheus metrics (policy.yaml metrics.listen).
EXPOSE 8080 9464

# The proxy answers HTTP: a request without a Host header is answered (400) by mitmproxy itself,
# with no DNS lookup, no upstream connection and no safeguarding-log record.  Set
# WEBPOLICY_HEALTHCHECK_PORT when the proxy listens elsewhere (--listen-port, --mode ...@port).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, socket, sys; s = socket.create_connection(('127.0.0.1', int(os.environ.get('WEBPOLICY_HEALTHCHECK_PORT', '8080'))), timeout=4); s.settimeout(4); s.sendall(b'GET / HTTP/1.1\\r\\nConnection: close\\r\\n\\r\\n'); sys.exit(0 if s.recv(16).startswith(b'HTTP/1.1 ') else 1)"]

ENTRYPOINT ["webpolicy", "run", "--policy", "/etc/webpolicy/policy.yaml", "--set", "confdir=/var/lib/webpolicy/mitmproxy", "--listen-host", "0.0.0.0"]

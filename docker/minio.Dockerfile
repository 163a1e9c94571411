# MinIO as a non-root user: the upstream image runs as root and its /data volume is root-owned, so
# this adds a data folder owned by uid 10001 (a fresh named volume copies that ownership) and
# switches to that user. Built by docker/compose.yaml; serves `server /var/lib/minio`.
FROM minio/minio:RELEASE.2025-09-07T16-13-09Z

RUN mkdir -p /var/lib/minio \
    && chown 10001:10001 /var/lib/minio

USER 10001:10001
ENV MC_CONFIG_DIR=/tmp/.mc
EXPOSE 9000 9001

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["curl", "-fsS", "http://127.0.0.1:9000/minio/health/live"]

CMD ["server", "/var/lib/minio", "--console-address", ":9001"]

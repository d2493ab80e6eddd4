# raftkv node image: `docker compose up` runs three of these (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# plyvel ships manylinux wheels with LevelDB inside, so no compiler or libleveldb-dev is needed
WORKDIR /src
COPY . /src
RUN pip install /src \
    && useradd --system --uid 10001 --home-dir /data raftkv \
    && mkdir -p /data \
    && chown raftkv:raftkv /data

# /data is created owned by raftkv before it is declared a volume, so a fresh named volume
# mounted there inherits that owner and the unprivileged node can write to it
USER raftkv
WORKDIR /data
VOLUME ["/data"]

# client port, peer (Raft) port
EXPOSE 7400 7500

# exec form: the node is PID 1 and gets SIGTERM from `docker stop` directly (clean shutdown)
ENTRYPOINT ["raftkv"]
CMD ["--help"]

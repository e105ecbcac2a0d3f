# clipiq serve on CPU.
#
#   docker build -t clipiq .
#   docker run --rm -p 8000:8000 -e CLIPIQ_API_KEY=change-me clipiq
#
# The service refuses to listen on a non-local host (here 0.0.0.0, so that the port can be published) without an
# API key: set CLIPIQ_API_KEY (clients then send `Authorization: Bearer <key>`), or append `--insecure` to the
# command only where something in front of the container does the access control. Limits: docs/security.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The CPU build of torch, pinned as in pyproject.toml ("2.13.0+cpu" satisfies ==2.13.0 and wins over PyPI's CUDA
# build); its own layer, so that code changes do not download it again.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[serve]" \
    && rm -rf /src

RUN useradd --create-home --uid 10001 clipiq
USER clipiq
WORKDIR /home/clipiq
# Downloaded weights (only for models that do not ship inside the package) are cached here: mount a volume on it
# to keep them across containers.
ENV CLIPIQ_HOME=/home/clipiq/.cache/clipiq

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"
CMD ["clipiq", "serve", "--host", "0.0.0.0", "--port", "8000"]

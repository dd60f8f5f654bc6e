# The project image for Kubernetes (cluster/kuberay/, cluster/refresh-*.yaml):
#   docker build -t ghcr.io/your-org/video-search:latest .
# The base holds the driver's Ray and Python (tests/test_cluster_manifests.py checks the tag).
FROM rayproject/ray:2.60.0-py311-gpu

USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users pipelines/ pipelines/
COPY --chown=ray:users vtr_models/ vtr_models/
# The constraint keeps the base's Ray: `pip install .` cannot move it.
RUN python -c "import ray; print('ray==' + ray.__version__)" > /tmp/ray-constraint.txt \
    && pip install --no-cache-dir -c /tmp/ray-constraint.txt .

# The default keyword model, in the image's Hugging Face cache: the jobs find it by its
# name with no network, and the tables they write record that name, which any other
# machine with the model in its cache (a notebook, a search service) finds too.
RUN python -c "from huggingface_hub import snapshot_download; snapshot_download('sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2')"
ENV HF_HUB_OFFLINE=1

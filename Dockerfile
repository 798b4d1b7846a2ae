# The FFN explorer as a CPU Hugging Face Space (sdk: docker, app_port: 7860).
# scripts/space_smoke.sh replays this file without Docker; tests/test_space.py keeps the two in step.
FROM python:3.11-slim

# Spaces run the container as uid 1000.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    VIRTUAL_ENV=/home/user/venv \
    PATH=/home/user/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1
WORKDIR /home/user/app

RUN python -m venv $VIRTUAL_ENV
# PyPI's torch wheel is the multi-GB CUDA build: take the same version's CPU wheel first, so that
# requirements.txt (torch==2.13.0, matched by 2.13.0+cpu) finds it already installed.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY --chown=user requirements.txt .
RUN pip install -r requirements.txt
COPY --chown=user . .

EXPOSE 7860
# Chooses the runs folder (/data/runs on persistent storage, seeded with runs/demo), sets demo mode
# and the 0.0.0.0 bind, then runs CMD.
ENTRYPOINT ["scripts/space_entrypoint.sh"]
CMD ["python", "app.py"]

# GPU worker: @tensorflow/tfjs-node-gpu 4.22 needs CUDA 11.8 + cuDNN 8 at run time and
# downloads libtensorflow during `npm ci`, so this image must be built with internet access.
FROM nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg python3 make g++ \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production TRAINER_BACKEND=tensorflow \
    PRISMA_QUERY_ENGINE_LIBRARY=/dev/null PRISMA_SCHEMA_ENGINE_BINARY=/bin/false
COPY package.json package-lock.json ./
# Optional dependencies included: this is where @tensorflow/tfjs-node-gpu installs.
RUN npm ci --no-audit --no-fund && node -e "require('@tensorflow/tfjs-node-gpu')"
COPY prisma ./prisma
COPY prisma.config.ts tsconfig.json ./
COPY scripts ./scripts
RUN bash scripts/prisma.sh generate
COPY services ./services
CMD ["node", "--import", "tsx", "services/worker/main.ts"]

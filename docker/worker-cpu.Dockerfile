# CPU worker: tfjs wasm backend with matrix products routed to OpenBLAS through the native addon.
FROM node:20-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libopenblas-dev python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production TRAINER_BACKEND=auto \
    PRISMA_QUERY_ENGINE_LIBRARY=/dev/null PRISMA_SCHEMA_ENGINE_BINARY=/bin/false
COPY package.json package-lock.json ./
RUN npm ci --omit=optional --no-audit --no-fund
COPY prisma ./prisma
COPY prisma.config.ts tsconfig.json ./
COPY scripts ./scripts
RUN bash scripts/prisma.sh generate
COPY services ./services
RUN bash scripts/build-native.sh
CMD ["node", "--import", "tsx", "services/worker/main.ts"]

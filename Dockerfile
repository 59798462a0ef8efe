# ragworks as a container: the compiled JavaScript on Node 20, run by an unprivileged user.
#   docker build -t ragworks:latest .
#   docker run --env-file .env ragworks:latest web        (or worker, scheduler, migrate, all)
# Settings come from the environment (docs/configuration.md); production needs ADMIN_TOKEN,
# DATABASE_URL as the application role and MIGRATION_DATABASE_URL as the owner
# (docs/operations.md, "Production database roles").

FROM node:20-bookworm-slim AS build
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts scripts
COPY src src
COPY queues queues
COPY workers workers
COPY migrations migrations
RUN npm run build -- /build/dist

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    PORT=8080 \
    METRICS_PORT=9464
WORKDIR /app
COPY --from=build /build/dist ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && mkdir -p data && chown node:node data
USER node
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["node", "src/healthcheck.js"]
ENTRYPOINT ["node", "src/main.js"]
CMD ["web"]

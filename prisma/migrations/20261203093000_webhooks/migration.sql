-- CreateEnum
CREATE TYPE "WebhookDeliveryStatus" AS ENUM ('pending', 'delivered', 'failed');

-- CreateTable
CREATE TABLE "WebhookEndpoint" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "url" TEXT NOT NULL,
    "secret" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "WebhookEndpoint_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "WebhookDelivery" (
    "id" UUID NOT NULL,
    "endpointId" UUID NOT NULL,
    "eventId" TEXT NOT NULL,
    "eventType" TEXT NOT NULL,
    "payload" JSONB NOT NULL,
    "status" "WebhookDeliveryStatus" NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "nextAttemptAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "lockedUntil" TIMESTAMP(3),
    "lastStatus" INTEGER,
    "lastError" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deliveredAt" TIMESTAMP(3),

    CONSTRAINT "WebhookDelivery_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "WebhookEndpoint_tenantId_idx" ON "WebhookEndpoint"("tenantId");

-- CreateIndex
CREATE INDEX "WebhookDelivery_status_nextAttemptAt_idx" ON "WebhookDelivery"("status", "nextAttemptAt");

-- CreateIndex
CREATE UNIQUE INDEX "WebhookDelivery_endpointId_eventId_key" ON "WebhookDelivery"("endpointId", "eventId");

-- AddForeignKey
ALTER TABLE "WebhookEndpoint" ADD CONSTRAINT "WebhookEndpoint_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "WebhookDelivery" ADD CONSTRAINT "WebhookDelivery_endpointId_fkey" FOREIGN KEY ("endpointId") REFERENCES "WebhookEndpoint"("id") ON DELETE CASCADE ON UPDATE CASCADE;


-- The outbox is filled in the same transaction as the job event it announces, whoever writes the
-- event (API or worker), so nothing is lost between the event and its deliveries. One row per
-- endpoint of the job's tenant, and the payload is OpenAI's webhook event shape.
-- Prisma's migration runner splits scripts at every semicolon, dollar quotes included: the body is
-- therefore an E'' string whose semicolons are written \073.
CREATE FUNCTION webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS E'
BEGIN
  IF NEW.type IN (''succeeded'', ''failed'', ''cancelled'') THEN
    INSERT INTO "WebhookDelivery" (id, "endpointId", "eventId", "eventType", payload, "nextAttemptAt", "createdAt")
    SELECT gen_random_uuid(), w.id, ''evt_'' || NEW.id, ''fine_tuning.job.'' || NEW.type,
           jsonb_build_object(
             ''id'', ''evt_'' || NEW.id,
             ''object'', ''event'',
             ''created_at'', floor(extract(epoch FROM now()))::bigint,
             ''type'', ''fine_tuning.job.'' || NEW.type,
             ''data'', jsonb_build_object(''id'', ''ftjob-'' || NEW."jobId")
           ),
           now() AT TIME ZONE ''UTC'', now() AT TIME ZONE ''UTC''
    FROM "WebhookEndpoint" w JOIN "Job" j ON j."tenantId" = w."tenantId"
    WHERE j.id = NEW."jobId"
    ON CONFLICT ("endpointId", "eventId") DO NOTHING\073
  END IF\073
  RETURN NEW\073
END
';

CREATE TRIGGER "JobEvent_webhook_outbox" AFTER INSERT ON "JobEvent" FOR EACH ROW EXECUTE FUNCTION webhook_outbox();

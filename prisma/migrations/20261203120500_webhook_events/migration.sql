-- Endpoints choose their events, and job.progress is opt-in and limited per job and endpoint (one
-- WebhookProgressMark row each remembers when the last one was queued). Deliveries keep when they
-- (re)entered the queue, which bounds their retries, and the start of the last answer of the receiver.
ALTER TABLE "WebhookEndpoint" ADD COLUMN "events" TEXT[] NOT NULL DEFAULT ARRAY['fine_tuning.job.succeeded', 'fine_tuning.job.failed', 'fine_tuning.job.cancelled']::TEXT[];
ALTER TABLE "WebhookDelivery" ADD COLUMN "queuedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;
ALTER TABLE "WebhookDelivery" ADD COLUMN "lastResponse" TEXT;

CREATE TABLE "WebhookProgressMark" (
    "endpointId" UUID NOT NULL,
    "jobId" UUID NOT NULL,
    "queuedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "WebhookProgressMark_pkey" PRIMARY KEY ("endpointId", "jobId")
);
ALTER TABLE "WebhookProgressMark" ADD CONSTRAINT "WebhookProgressMark_endpointId_fkey" FOREIGN KEY ("endpointId") REFERENCES "WebhookEndpoint"("id") ON DELETE CASCADE ON UPDATE CASCADE;
ALTER TABLE "WebhookProgressMark" ADD CONSTRAINT "WebhookProgressMark_jobId_fkey" FOREIGN KEY ("jobId") REFERENCES "Job"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- The interval between two job.progress deliveries of one job to one endpoint, declared here only.
CREATE FUNCTION webhook_progress_interval() RETURNS interval LANGUAGE sql IMMUTABLE AS E'SELECT interval ''1 minute''';

-- Outcome events go to the endpoints that chose them. A step event (the worker writes at most one a
-- second) becomes a job.progress delivery only for endpoints that opted in and whose mark for the job
-- is older than the interval: the conditional upsert of the mark is the limiter, so the outbox gets at most
-- one progress row per job and endpoint per interval. (Semicolons are \073: see 20261203093000_webhooks.)
CREATE OR REPLACE FUNCTION webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS E'
BEGIN
  IF NEW.type IN (''succeeded'', ''failed'', ''cancelled'') THEN
    INSERT INTO "WebhookDelivery" (id, "endpointId", "eventId", "eventType", payload, "nextAttemptAt", "queuedAt", "createdAt")
    SELECT gen_random_uuid(), w.id, ''evt_'' || NEW.id, ''fine_tuning.job.'' || NEW.type,
           jsonb_build_object(
             ''id'', ''evt_'' || NEW.id,
             ''object'', ''event'',
             ''created_at'', floor(extract(epoch FROM now()))::bigint,
             ''type'', ''fine_tuning.job.'' || NEW.type,
             ''data'', jsonb_build_object(''id'', ''ftjob-'' || NEW."jobId")
           ),
           now() AT TIME ZONE ''UTC'', now() AT TIME ZONE ''UTC'', now() AT TIME ZONE ''UTC''
    FROM "WebhookEndpoint" w JOIN "Job" j ON j."tenantId" = w."tenantId"
    WHERE j.id = NEW."jobId" AND (''fine_tuning.job.'' || NEW.type) = ANY (w.events)
    ON CONFLICT ("endpointId", "eventId") DO NOTHING\073
  ELSIF NEW.type = ''step'' THEN
    WITH due AS (
      INSERT INTO "WebhookProgressMark" ("endpointId", "jobId", "queuedAt")
      SELECT w.id, NEW."jobId", now() AT TIME ZONE ''UTC''
      FROM "WebhookEndpoint" w JOIN "Job" j ON j."tenantId" = w."tenantId"
      WHERE j.id = NEW."jobId" AND ''job.progress'' = ANY (w.events)
      ON CONFLICT ("endpointId", "jobId") DO UPDATE SET "queuedAt" = EXCLUDED."queuedAt"
        WHERE "WebhookProgressMark"."queuedAt" <= EXCLUDED."queuedAt" - webhook_progress_interval()
      RETURNING "endpointId"
    )
    INSERT INTO "WebhookDelivery" (id, "endpointId", "eventId", "eventType", payload, "nextAttemptAt", "queuedAt", "createdAt")
    SELECT gen_random_uuid(), due."endpointId", ''evt_'' || NEW.id, ''job.progress'',
           jsonb_build_object(
             ''id'', ''evt_'' || NEW.id,
             ''object'', ''event'',
             ''created_at'', floor(extract(epoch FROM now()))::bigint,
             ''type'', ''job.progress'',
             ''data'', jsonb_build_object(''id'', ''ftjob-'' || NEW."jobId", ''job_id'', NEW."jobId", ''progress'', COALESCE(NEW.data, ''{}''::jsonb))
           ),
           now() AT TIME ZONE ''UTC'', now() AT TIME ZONE ''UTC'', now() AT TIME ZONE ''UTC''
    FROM due
    ON CONFLICT ("endpointId", "eventId") DO NOTHING\073
  END IF\073
  RETURN NEW\073
END
';

-- Adapter composition runs as a job: what to compose, null for fine-tunes.

-- AlterTable
ALTER TABLE "Job" ADD COLUMN "composition" JSONB;

-- Adapter size search (sweeps): the Sweep table, Job.sweepId on its children, and the trainable
-- parameter count the sweep table reports, recorded on each new Adapter row.

-- CreateTable
CREATE TABLE "Sweep" (
    "id" UUID NOT NULL,
    "tenantId" UUID NOT NULL,
    "task" TEXT NOT NULL,
    "metric" TEXT NOT NULL,
    "higherIsBetter" BOOLEAN NOT NULL,
    "tolerance" DOUBLE PRECISION NOT NULL,
    "request" JSONB NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Sweep_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "Sweep_tenantId_createdAt_idx" ON "Sweep"("tenantId", "createdAt");

-- AddForeignKey
ALTER TABLE "Sweep" ADD CONSTRAINT "Sweep_tenantId_fkey" FOREIGN KEY ("tenantId") REFERENCES "Tenant"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AlterTable
ALTER TABLE "Job" ADD COLUMN "sweepId" UUID;

-- CreateIndex
CREATE INDEX "Job_sweepId_idx" ON "Job"("sweepId");

-- AddForeignKey
ALTER TABLE "Job" ADD CONSTRAINT "Job_sweepId_fkey" FOREIGN KEY ("sweepId") REFERENCES "Sweep"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AlterTable
ALTER TABLE "Adapter" ADD COLUMN "trainableParameters" INTEGER;

-- AlterTable
ALTER TABLE "Dataset" ADD COLUMN     "deletedAt" TIMESTAMP(3);


// The Python that runs the PyTorch references: Debian's python3 with python3-torch (scripts/setup.sh).
import { execFileSync } from "node:child_process";

export const PYTHON = process.env.REFERENCE_PYTHON ?? "/usr/bin/python3";

/** Why the live reference tests are skipped here, or false when PYTHON imports torch. */
export const liveReferenceSkip: string | false = (() => {
  try {
    execFileSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" });
    return false;
  } catch {
    return `${PYTHON} cannot import torch`;
  }
})();

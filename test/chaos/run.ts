import { chaosProblems, formatReport, runChaos } from './chaos';

/**
 * `npm run chaos`: the long chaos run. CHAOS_SECONDS (default 600) of load,
 * CHAOS_ROUNDS (default 3) of every fault, CHAOS_SEED (default: drawn, and
 * printed so a failing run can be repeated). Prints the report; exits 1 if
 * anything accepted was lost or a client saw more than the documented 503s.
 */
async function main(): Promise<void> {
  const seed = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const report = await runChaos({
    durationMs: Number(process.env.CHAOS_SECONDS ?? 600) * 1000,
    rounds: Number(process.env.CHAOS_ROUNDS ?? 3),
    seed,
    poisonDocuments: 2,
    log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
  });
  process.stdout.write(`${formatReport(report)}\n`);
  const problems = chaosProblems(report);
  for (const problem of problems) process.stdout.write(`FAILED: ${problem}\n`);
  process.exitCode = problems.length === 0 ? 0 : 1;
}

void main();

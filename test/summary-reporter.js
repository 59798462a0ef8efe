const fs = require('node:fs');

/**
 * Ends the run with one plain line, "N passed, N failed", that CI tools
 * which do not know jest's own summary can read. Written at exit so it
 * comes after jest's summary.
 */
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const line = `${results.numPassedTests} passed, ${results.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
    process.once('exit', () => fs.writeSync(2, `\n${line}`));
  }
}
module.exports = SummaryReporter;

// Counts calls per key in a file, so a test can fail on its first runs and pass later.
const fs = require('fs');
const path = require('path');

const dir = path.join(__dirname, '.counters');

module.exports = function bump(key) {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, key.replace(/[^\w-]/g, '_'));
  const count = fs.existsSync(file) ? Number(fs.readFileSync(file, 'utf8')) + 1 : 1;
  fs.writeFileSync(file, String(count));
  return count;
};

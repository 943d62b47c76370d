// Fails to load: the whole file errors before any test is collected.
require('./does-not-exist');

test('never collected', () => {});

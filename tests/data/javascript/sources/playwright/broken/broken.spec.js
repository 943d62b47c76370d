// Fails to load: Playwright reports a load error instead of running this file.
require('./does-not-exist');

#!/usr/bin/env node
// The CLI runs from its TypeScript source, as the server does (tsx).
require('tsx/cjs');
require('../clients/cli/main.ts').main();

#!/usr/bin/env node
import { main } from "./program.js";

const code = await main(process.argv);
// Long-running commands (dev, serve) keep the event loop alive; one-shot commands end here.
if (code !== 0) process.exit(code);

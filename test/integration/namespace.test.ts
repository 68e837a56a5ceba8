import { paritySuite } from '../parity/contract.js';

paritySuite({ backend: 'namespace', skip: process.getuid?.() === 0 ? undefined : 'the namespace backend needs root (loop mounts, cgroups)' });

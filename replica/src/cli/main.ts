// The bftkube command line. Only what exists is offered; the rest says so plainly.
const command = process.argv[2] ?? 'help';

switch (command) {
  case 'local':
    process.stdout.write(
      [
        'bftkube local: not yet available.',
        'The replica process, transport and client library are the next milestone (issue "Replica process, client library, ...").',
        'What runs today: the consensus core in the seeded simulator:',
        '  npm run sim -- --seeds 100',
        '',
      ].join('\n'),
    );
    break;
  default:
    process.stdout.write('usage: bftkube local\n');
    process.exitCode = command === 'help' ? 0 : 2;
}

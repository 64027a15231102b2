/** Jest runs the specs of the pure modules (model.ts, graph.ts) under Node: no browser, no JupyterLab. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: { module: 'commonjs', target: 'ES2022', strict: true, esModuleInterop: true, types: ['jest'] } }]
  }
};

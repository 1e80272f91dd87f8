// Copied from ../shared/peers/nodered/settings.js (2026-12-05) for bench 8; the bench passes
// the port (-p), user dir (-u) and flow file on the command line, so flowFile/uiPort below are unused;
// one line added: mqttReconnectTime.
// Headless Node-RED for the ingest comparison: no editor, no admin API, no HTTP nodes,
// no telemetry/update checks; flows from scratch/nodered/flows.json.
module.exports = {
    mqttReconnectTime: 200,    // bench 8 only: the flow is started with the broker down (so its
                               // pragmas are set before the backlog arrives); reconnect quickly
    uiHost: "127.0.0.1",
    uiPort: 18880,
    httpAdminRoot: false,      // editor and admin API off
    httpNodeRoot: false,       // no HTTP-in endpoints
    flowFile: "scratch/nodered/flows.json",
    flowFilePretty: true,
    credentialSecret: false,
    nodesDir: [],
    functionExternalModules: false,
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    diagnostics: { enabled: false },
    runtimeState: { enabled: false },
    telemetry: { enabled: false },
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
};

// Node-RED settings for the listener benchmark: HTTP nodes only, no editor, loopback only.
// bench/bench_listener.py starts Node-RED with NODE_RED_PORT and NODE_RED_USER_DIR (a temporary
// directory, so runtime state never lands in the repository).
const path = require("path");

module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NODE_RED_PORT || "1880", 10),
    userDir: process.env.NODE_RED_USER_DIR,
    flowFile: path.join(__dirname, "flows.json"),
    credentialSecret: false,
    httpAdminRoot: false,          // no editor and no admin API
    httpNodeRoot: "/",
    httpStatic: false,
    diagnostics: {enabled: false, ui: false},
    runtimeState: {enabled: false, ui: false},
    telemetry: {enabled: false, updateNotification: false},
    externalModules: {autoInstall: false, palette: {allowInstall: false}, modules: {allowInstall: false}},
    functionExternalModules: false,
    logging: {console: {level: "warn", metrics: false, audit: false}},
};

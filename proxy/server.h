/* server: the daemon. Loads the snapshot, binds one SO_REUSEPORT listener per worker, runs the
 * workers (one event loop each) and the main thread's signal handling, and drives each request
 * through the pipeline: framing (conn) -> route -> validate -> credential -> upstream -> reply,
 * with one access log line per request.
 *
 * Threads: gw_server_run is called once, from main(); it starts and joins the workers.
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

/* Serves until SIGTERM or SIGINT and a graceful drain. Returns the process exit status
 * (0 after a clean shutdown, 1 when the configuration or the listeners fail). */
int gw_server_run(const char *config_path);

#endif

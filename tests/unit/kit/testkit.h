/*
 * testkit: what several unit tests share, so that each test says only what is particular to it.
 *
 *  - the test PKI of the credex_test_pki ctest fixture ($CREDEX_TEST_PKI,
 * tests/unit/CMakeLists.txt): file paths, a client's TLS identity, a client of an in-process
 * server;
 *  - the options of an in-process rpc server with the certificate of one credex identity;
 *  - the env file of tests/unit/fga/openfga-fixture (URL, STORE, MODEL, DEAD);
 *  - base64url without padding, for tokens and JWKS the tests build by hand;
 *  - a TLS file server (openssl s_server -WWW) with a test PKI certificate, free ports, whether
 *    a port listens, and a monotonic clock, for tests that start, stop and time processes;
 *  - a FerretDB of a test's own, which it can stop, freeze and start again.
 *
 * Failures fail the running cmocka test (assertions), never return a half-made value.
 */
#ifndef CREDEX_TESTS_UNIT_KIT_TESTKIT_H
#define CREDEX_TESTS_UNIT_KIT_TESTKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/mdb/mdb.h"
#include "common/rpc/rpc.h"

/* $CREDEX_TEST_PKI/<file>, in one of 64 rotating buffers (enough for every path one fixture
 * set-up holds at once). Aborts with a message when the variable is unset: run through ctest. */
const char *tk_pki_path(const char *file);

/* The mTLS identity `who` (<who>.pem/.key) with the test CA. */
rpc_tls_t tk_tls(const char *who);

/* A client of the server at addr whose identity must be `peer`, presenting identity `who`. */
rpc_client_t *tk_client(const char *addr, const char *peer, const char *who);

/* Options of a test server named `name` on 127.0.0.1:0 with the certificate of `name`: 2
 * threads, 64 KiB messages, 8 KiB metadata, 5 s deadlines, 500 ms grace, reflection. Tests
 * change the fields they care about. */
rpc_server_options_t tk_server_options(const char *name);

typedef struct tk_fga_env {
    char url[256], store[64], model[64], dead[256];
} tk_fga_env_t;

/* Read the openfga-fixture env file at path (NULL: $CREDEX_TEST_FGA_ENV). False when it is
 * missing or has no URL or STORE. */
bool tk_fga_env_read(const char *path, tk_fga_env_t *env);

/* base64url of in[0..len) without padding into out (at least 4 * (len + 2) / 3 + 1 bytes). */
void tk_b64url(const unsigned char *in, size_t len, char *out);

/* A TCP port free on the IPv4 address ip at the time of the call. */
int tk_free_port(const char *ip);

/* openssl s_server serving the files of dir (HTTP/1.0, -WWW) over TLS on ip:port with the test
 * PKI's certificate <who>.pem; returns once it accepts connections. Stop it with
 * tk_process_stop. */
pid_t tk_tls_file_server(const char *dir, const char *ip, int port, const char *who);

/* SIGTERM and reap a child process. */
void tk_process_stop(pid_t pid);

/* CLOCK_MONOTONIC in seconds, for bounds that are the requirement (e.g. a timeout). */
double tk_now(void);

/* Does something accept TCP connections on ip:port? */
bool tk_port_open(const char *ip, int port);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t tk_mono_ms(void);

/* An mdb on uri, database db: every timeout timeout_ms, w=majority, a pool of 16. */
mdb_t *tk_mdb_open(const char *uri, const char *db, unsigned timeout_ms);

/* The URI of the mdb_ferretdb ctest fixture's FerretDB ($CREDEX_TEST_FERRETDB_DIR/uri) into out;
 * false, with a message on stderr, when it cannot be read (not run through ctest). For main(),
 * before cmocka runs. */
bool tk_ferretdb_fixture_uri(char *out, size_t n);

/* A FerretDB of a test's own: the binary of the mdb_ferretdb ctest fixture
 * ($CREDEX_TEST_FERRETDB_DIR/bin), in a folder of its own under the fixture's, on a fixed free
 * port, so that it can be stopped and started again where the client under test expects it. */
typedef struct tk_ferretdb {
    char dir[600], bin[512], uri[64];
    int port;
    pid_t pid;
} tk_ferretdb_t;

/* Start a new one; returns once it accepts connections. */
void tk_ferretdb_init(tk_ferretdb_t *d);
/* Start it again (same folder, same port); returns at once (see tk_ferretdb_wait_listening). */
void tk_ferretdb_start(tk_ferretdb_t *d);
/* Wait until it accepts connections; returns that moment (tk_mono_ms), polled every 2 ms. */
int64_t tk_ferretdb_wait_listening(tk_ferretdb_t *d);
/* SIGTERM (after SIGCONT, in case it is frozen) and reap. No-op when not running. */
void tk_ferretdb_stop(tk_ferretdb_t *d);
/* SIGSTOP, returning once it has taken effect (kill returns before the target stops). */
void tk_ferretdb_freeze(tk_ferretdb_t *d);

#endif

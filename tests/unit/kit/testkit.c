/* testkit: see testkit.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/kit/testkit.h"

extern const unsigned char credex_descriptor_set[];
extern const size_t credex_descriptor_set_len;

const char *tk_pki_path(const char *file)
{
    static char buf[64][640];
    static int i;
    const char *dir = getenv("CREDEX_TEST_PKI");
    if (!dir || !*dir) {
        fprintf(stderr, "CREDEX_TEST_PKI is not set (run through ctest: credex_test_pki)\n");
        abort();
    }
    char *p = buf[i++ % 64];
    snprintf(p, sizeof(buf[0]), "%s/%s", dir, file);
    return p;
}

rpc_tls_t tk_tls(const char *who)
{
    char cert[64], key[64];
    snprintf(cert, sizeof(cert), "%s.pem", who);
    snprintf(key, sizeof(key), "%s.key", who);
    return (rpc_tls_t){.ca_file = tk_pki_path("ca.pem"),
                       .cert_file = tk_pki_path(cert),
                       .key_file = tk_pki_path(key)};
}

rpc_client_t *tk_client(const char *addr, const char *peer, const char *who)
{
    rpc_tls_t tls = tk_tls(who);
    cx_error_t err;
    rpc_client_t *c = rpc_client_new(addr, peer, &tls, &err);
    if (!c)
        fail_msg("client %s -> %s at %s: %s", who, peer, addr, err.message);
    return c;
}

rpc_server_options_t tk_server_options(const char *name)
{
    return (rpc_server_options_t){.name = name,
                                  .listen_addr = "127.0.0.1:0",
                                  .tls = tk_tls(name),
                                  .threads = 2,
                                  .max_message_bytes = 64 * 1024,
                                  .max_metadata_bytes = 8 * 1024,
                                  .max_deadline_ms = 5000,
                                  .shutdown_grace_ms = 500,
                                  .descriptor_set = credex_descriptor_set,
                                  .descriptor_set_len = credex_descriptor_set_len};
}

bool tk_fga_env_read(const char *path, tk_fga_env_t *env)
{
    static const struct {
        const char *key;
        size_t off, size;
    } fields[] = {
        {"URL=", offsetof(tk_fga_env_t, url), sizeof(((tk_fga_env_t *)0)->url)},
        {"STORE=", offsetof(tk_fga_env_t, store), sizeof(((tk_fga_env_t *)0)->store)},
        {"MODEL=", offsetof(tk_fga_env_t, model), sizeof(((tk_fga_env_t *)0)->model)},
        {"DEAD=", offsetof(tk_fga_env_t, dead), sizeof(((tk_fga_env_t *)0)->dead)},
    };
    memset(env, 0, sizeof(*env));
    if (!path)
        path = getenv("CREDEX_TEST_FGA_ENV");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return false;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            size_t kl = strlen(fields[i].key);
            if (strncmp(line, fields[i].key, kl) == 0)
                snprintf((char *)env + fields[i].off, fields[i].size, "%s", line + kl);
        }
    }
    fclose(f);
    return env->url[0] && env->store[0];
}

void tk_b64url(const unsigned char *in, size_t len, char *out)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = t[(v >> 18) & 63];
        out[o++] = t[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = t[(v >> 6) & 63];
        if (i + 2 < len)
            out[o++] = t[v & 63];
    }
    out[o] = '\0';
}

static struct sockaddr_in tk_addr(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

int tk_free_port(const char *ip)
{
    struct sockaddr_in a = tk_addr(ip, 0);
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

bool tk_port_open(const char *ip, int port)
{
    struct sockaddr_in a = tk_addr(ip, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

pid_t tk_tls_file_server(const char *dir, const char *ip, int port, const char *who)
{
    char accept[64], cert[64], key[64];
    snprintf(accept, sizeof(accept), "%s:%d", ip, port);
    snprintf(cert, sizeof(cert), "%s.pem", who);
    snprintf(key, sizeof(key), "%s.key", who);
    const char *cert_path = tk_pki_path(cert), *key_path = tk_pki_path(key);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(127);
        execlp("openssl", "openssl", "s_server", "-quiet", "-WWW", "-accept", accept, "-cert",
               cert_path, "-key", key_path, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && !tk_port_open(ip, port); i++)
        usleep(50000);
    assert_true(tk_port_open(ip, port));
    return pid;
}

void tk_process_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

double tk_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t tk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a FerretDB of a test's own ------------------------------------------------------------ */

mdb_t *tk_mdb_open(const char *uri, const char *db, unsigned timeout_ms)
{
    mdb_t *m = NULL;
    cx_error_t err;
    mdb_options_t o = {.uri = uri,
                       .db = db,
                       .timeout_ms = timeout_ms,
                       .write_majority = true,
                       .pool_max = 16,
                       .app_name = "credex-test"};
    if (!mdb_open(&m, &o, &err))
        fail_msg("mdb_open: %s", err.message);
    return m;
}

bool tk_ferretdb_fixture_uri(char *out, size_t n)
{
    const char *dir = getenv("CREDEX_TEST_FERRETDB_DIR");
    char path[600];
    FILE *f;
    if (!dir || !*dir) {
        fprintf(stderr, "CREDEX_TEST_FERRETDB_DIR is not set (ctest's mdb_ferretdb fixture)\n");
        return false;
    }
    snprintf(path, sizeof(path), "%s/uri", dir);
    if (!(f = fopen(path, "r")) || !fgets(out, (int)n, f)) {
        fprintf(stderr, "cannot read %s\n", path);
        if (f)
            fclose(f);
        return false;
    }
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    return true;
}

void tk_ferretdb_start(tk_ferretdb_t *d)
{
    char sqlite[700], state[700], listen[64], log[700];
    snprintf(sqlite, sizeof(sqlite), "--sqlite-url=file:%s/", d->dir);
    snprintf(state, sizeof(state), "--state-dir=%s", d->dir);
    snprintf(listen, sizeof(listen), "--listen-addr=127.0.0.1:%d", d->port);
    snprintf(log, sizeof(log), "%s/ferretdb.log", d->dir);
    char *argv[] = {d->bin,
                    "--handler=sqlite",
                    sqlite,
                    state,
                    listen,
                    "--debug-addr=-",
                    "--telemetry=disable",
                    "--log-level=warn",
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    extern char **environ;
    assert_int_equal(posix_spawn(&d->pid, d->bin, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
}

int64_t tk_ferretdb_wait_listening(tk_ferretdb_t *d)
{
    for (int i = 0; i < 5000; i++) {
        if (tk_port_open("127.0.0.1", d->port))
            return tk_mono_ms();
        usleep(2000);
    }
    fail_msg("own FerretDB did not listen on %d", d->port);
    return 0;
}

void tk_ferretdb_stop(tk_ferretdb_t *d)
{
    int status;
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGCONT);
    kill(d->pid, SIGTERM);
    waitpid(d->pid, &status, 0);
    d->pid = 0;
}

void tk_ferretdb_freeze(tk_ferretdb_t *d)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)d->pid);
    kill(d->pid, SIGSTOP);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        if (f)
            fclose(f);
        buf[n] = '\0';
        const char *close_paren = strrchr(buf, ')');
        if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'T')
            return;
        usleep(1000);
    }
    fail_msg("own FerretDB did not stop");
}

void tk_ferretdb_init(tk_ferretdb_t *d)
{
    static int seq;
    char path[600];
    FILE *f;
    const char *fixture = getenv("CREDEX_TEST_FERRETDB_DIR");
    if (!fixture || !*fixture)
        fail_msg("CREDEX_TEST_FERRETDB_DIR is not set (ctest's mdb_ferretdb fixture)");
    memset(d, 0, sizeof(*d));
    snprintf(path, sizeof(path), "%s/bin", fixture);
    assert_non_null(f = fopen(path, "r"));
    assert_non_null(fgets(d->bin, sizeof(d->bin), f));
    fclose(f);
    d->bin[strcspn(d->bin, "\n")] = '\0';
    snprintf(d->dir, sizeof(d->dir), "%s/own-%d-%d", fixture, (int)getpid(), seq++);
    mkdir(d->dir, 0700);
    d->port = tk_free_port("127.0.0.1");
    snprintf(d->uri, sizeof(d->uri), "mongodb://127.0.0.1:%d/", d->port);
    tk_ferretdb_start(d);
    tk_ferretdb_wait_listening(d);
}

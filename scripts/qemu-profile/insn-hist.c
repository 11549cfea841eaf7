/* QEMU 7.2 TCG plugin (plugin API v1, no glib): counts each guest instruction address's
   executions (addresses below 4 MiB) and writes "total N" and "ADDR COUNT" lines at exit.
   usage: -plugin ./insn-hist.so,out=PATH -d plugin   (see README.md here) */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
typedef struct { const char *target_name; struct { int min; int cur; } version; bool system_emulation;
                 union { struct { int smp_vcpus; int max_vcpus; } system; }; } qemu_info_t;
struct qemu_plugin_tb; struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);


#define SPAN (4u << 20)
static uint64_t *counts;
static uint64_t total;
static const char *outpath = "hist.txt";

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        if (pc < SPAN)
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counts[pc / 2], 1);
    }
}

static void at_exit(qemu_plugin_id_t id, void *p) {
    FILE *f = fopen(outpath, "w");
    if (!f) return;
    fprintf(f, "total %" PRIu64 "\n", total);
    for (uint64_t i = 0; i < SPAN / 2; i++)
        if (counts[i]) fprintf(f, "%" PRIx64 " %" PRIu64 "\n", i * 2, counts[i]);
    fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "out=", 4)) outpath = strdup(argv[i] + 4);
    counts = calloc(SPAN / 2, sizeof *counts);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}

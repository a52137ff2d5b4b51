/* Small output helpers shared by the subcommands. */
#include "cli.h"

#include <string.h>

void cli_json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

void cli_group_digits(int64_t v, char *buf, size_t len) {
    char raw[32];
    snprintf(raw, sizeof raw, "%lld", (long long)(v < 0 ? -v : v));
    size_t n = strlen(raw), o = 0;
    char tmp[48];
    if (v < 0) tmp[o++] = '-';
    for (size_t i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) tmp[o++] = ',';
        tmp[o++] = raw[i];
    }
    tmp[o] = '\0';
    snprintf(buf, len, "%s", tmp);
}

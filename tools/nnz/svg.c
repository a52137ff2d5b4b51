/* A growing text buffer and the few SVG primitives nnz report draws with (report.h). */
#include "report.h"

#include <stdarg.h>
#include <stdlib.h>

void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const size_t room = b->cap - b->len;
        const int w = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = true;
            return;
        }
        if (b->p && (size_t)w < room) {
            b->len += (size_t)w;
            return;
        }
        const size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)w;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
}

void sb_escape(sbuf *b, const char *s) {
    for (; *s; s++) switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&apos;"); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            if ((unsigned char)*s >= 0x20 || *s == '\t') sb_printf(b, "%c", *s);
            else sb_printf(b, "?");
        }
}

void svg_open(sbuf *b, int w, int h, const char *title) {
    sb_printf(b,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
              "font-family=\"sans-serif\" font-size=\"12\">\n<title>",
              w, h, w, h);
    sb_escape(b, title);
    sb_printf(b, "</title>\n<rect class=\"background\" x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
              w, h);
}

void svg_text(sbuf *b, double x, double y, const char *anchor, const char *extra, const char *text) {
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra ? extra : "");
    sb_escape(b, text);
    sb_printf(b, "</text>\n");
}

void svg_title(sbuf *b, int w, double y, const char *title) {
    enum { FONT = 15, MIN_FONT = 8, MARGIN = 10 };
    size_t chars = 0; /* UTF-8 characters: bytes that do not continue one */
    for (const unsigned char *p = (const unsigned char *)title; *p; p++) chars += (*p & 0xC0) != 0x80;
    /* sans-serif averages about 0.55 em per character: a long title gets a smaller font rather than
       running off the canvas (textLength would squeeze it too, but not every renderer honours it) */
    double font = FONT;
    if (chars > 0 && 0.55 * FONT * (double)chars > w - 2 * MARGIN) font = (w - 2 * MARGIN) / (0.55 * (double)chars);
    char extra[40];
    snprintf(extra, sizeof extra, " font-size=\"%.1f\"", font < MIN_FONT ? MIN_FONT : font);
    svg_text(b, w / 2.0, y, "middle", extra, title);
}

/* digest: text in, a digest of it out, made by other agents and a model:
 *   {"wordcount": <the wordcount agent's JSON output>,
 *    "summary": "<a one-line summary by the summarizer model>",
 *    "errors": []}
 * It calls the agent "wordcount" (a dependency, named by its bare name) on the
 * text, and asks the model "summarizer" for a summary (a chat completion of at
 * most 16 tokens). A part whose call fails is null, and "errors" says why, with
 * the status and the node's message: "call: -6 no provider answered". It always
 * exits 0. Under `mercato exec` there is no node: both parts fail with -11. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../mercato.h"

#define MAX_DEPTH 64    /* JSON nesting we follow: deeper is refused, not recursed into */
#define MAX_MESSAGE 500 /* bytes of a failure message we keep */

typedef struct {
    char *data;
    size_t len, cap;
} buffer;

static void put(buffer *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            fputs("digest: out of memory\n", stderr);
            exit(3);
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void put_text(buffer *b, const char *s) { put(b, s, strlen(s)); }

/* s as a JSON string, quotes included: quotes, backslashes and control
 * characters escaped, other bytes (UTF-8 included) as they are. */
static void put_json_string(buffer *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    size_t plain = 0; /* start of the run of bytes that need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        put(b, s + plain, i - plain);
        plain = i + 1;
        const char *short_escape = c == '"'    ? "\\\""
                                   : c == '\\'   ? "\\\\"
                                   : c == '\n'   ? "\\n"
                                   : c == '\r'   ? "\\r"
                                   : c == '\t'   ? "\\t"
                                                 : NULL;
        if (short_escape != NULL) {
            put(b, short_escape, 2);
        } else {
            char escape[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(b, escape, 6);
        }
    }
    put(b, s + plain, n - plain);
    put(b, "\"", 1);
}

/* -- a small JSON scanner: each returns the end of what it skipped, or NULL if
 *    the text there is not JSON. ------------------------------------------- */

static const char *skip_value(const char *p, const char *end, int depth);

/* Tolerates NULL (what a failed skip returns), so that skips chain. */
static const char *skip_ws(const char *p, const char *end) {
    if (p == NULL) return NULL;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A string, from its opening quote. Its content is then valid JSON string
 * content: no raw control character, only known escapes. */
static const char *skip_string(const char *p, const char *end) {
    if (p >= end || *p != '"') return NULL;
    for (p++; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p + 1;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (++p >= end) return NULL;
            if (*p == 'u') {
                if (end - p < 5) return NULL;
                for (int i = 1; i <= 4; i++)
                    if (!is_hex(p[i])) return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
    }
    return NULL;
}

static const char *skip_digits(const char *p, const char *end) {
    if (p >= end || !is_digit(*p)) return NULL;
    while (p < end && is_digit(*p)) p++;
    return p;
}

static const char *skip_number(const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') {
        p++;
    } else if ((p = skip_digits(p, end)) == NULL) {
        return NULL;
    }
    if (p < end && *p == '.' && (p = skip_digits(p + 1, end)) == NULL) return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        p = skip_digits(p, end);
    }
    return p;
}

static const char *skip_word(const char *p, const char *end, const char *word) {
    size_t n = strlen(word);
    return (size_t)(end - p) >= n && memcmp(p, word, n) == 0 ? p + n : NULL;
}

/* An object or an array, from its opening bracket. */
static const char *skip_container(const char *p, const char *end, int depth) {
    char close = *p == '{' ? '}' : ']';
    p = skip_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    while (p != NULL && p < end) {
        if (close == '}') {
            p = skip_ws(skip_string(p, end), end);
            if (p == NULL || p >= end || *p != ':') return NULL;
            p++;
        }
        p = skip_ws(skip_value(p, end, depth + 1), end);
        if (p == NULL || p >= end) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1, end);
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *end, int depth) {
    if (p == NULL || depth > MAX_DEPTH) return NULL;
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    switch (*p) {
    case '{':
    case '[': return skip_container(p, end, depth);
    case '"': return skip_string(p, end);
    case 't': return skip_word(p, end, "true");
    case 'f': return skip_word(p, end, "false");
    case 'n': return skip_word(p, end, "null");
    default: return skip_number(p, end);
    }
}

static int is_json(const char *s, size_t n) {
    const char *p = skip_value(s, s + n, 0);
    return p != NULL && skip_ws(p, s + n) == s + n;
}

/* In the (valid) object at p, the value of the member named key, or NULL. */
static const char *member(const char *p, const char *end, const char *key) {
    size_t n = strlen(key);
    if (p >= end || *p != '{') return NULL;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *name_end = skip_string(p, end);
        if (name_end == NULL) return NULL;
        int match = name_end - p == (long)n + 2 && memcmp(p + 1, key, n) == 0;
        const char *colon = skip_ws(name_end, end);
        if (colon >= end || *colon != ':') return NULL;
        const char *value = skip_ws(colon + 1, end);
        if (match) return value;
        p = skip_ws(skip_value(value, end, 0), end);
        if (p == NULL) return NULL;
        if (p < end && *p == ',') p = skip_ws(p + 1, end);
    }
    return NULL;
}

/* The raw content of choices[0].message.content, a JSON string, in an
 * OpenAI-style chat completion: 1 and its bytes between the quotes, or 0. */
static int answer_content(const char *s, size_t n, const char **content, size_t *len) {
    const char *end = s + n;
    if (!is_json(s, n)) return 0;
    const char *choices = member(skip_ws(s, end), end, "choices");
    if (choices == NULL || *choices != '[') return 0;
    const char *first = skip_ws(choices + 1, end);
    const char *message = member(first, end, "message");
    const char *text = message ? member(message, end, "content") : NULL;
    if (text == NULL || *text != '"') return 0;
    *content = text + 1;
    *len = (size_t)(skip_string(text, end) - 1 - *content);
    return 1;
}

/* -- calls out --------------------------------------------------------------- */

static char first_part[4096];

/* The whole result of n bytes: the first part came in first_part, the rest is
 * read with mercato_result. */
static char *whole_result(int32_t n, size_t *len) {
    char *all = malloc((size_t)n + 1);
    if (all == NULL) return NULL;
    size_t have = (size_t)n < sizeof first_part ? (size_t)n : sizeof first_part;
    memcpy(all, first_part, have);
    while (have < (size_t)n) {
        int32_t got = mercato_result(have, all + have, (size_t)n - have);
        if (got <= 0) break;
        have += (size_t)got;
    }
    all[have] = '\0';
    *len = have;
    return all;
}

/* "what: STATUS MESSAGE", the message read with mercato_result, into errors. */
static void add_failure(buffer *errors, const char *what, int32_t status) {
    char message[MAX_MESSAGE];
    int32_t got = mercato_result(0, message, sizeof message);
    char head[48];
    snprintf(head, sizeof head, "%s: %d ", what, (int)status);
    buffer line = {0};
    put_text(&line, head);
    put(&line, message, got > 0 ? (size_t)got : 0);
    if (errors->len) put_text(errors, ", ");
    put_json_string(errors, line.data, line.len);
    free(line.data);
}

static void add_error(buffer *errors, const char *text) {
    if (errors->len) put_text(errors, ", ");
    put_json_string(errors, text, strlen(text));
}

int main(void) {
    buffer text = {0}, out = {0}, errors = {0}, request = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) put(&text, chunk, n);
    if (text.data == NULL) put(&text, "", 0);

    put_text(&out, "{\"wordcount\": ");
    int32_t status = mercato_call("wordcount", 9, text.data, text.len, first_part,
                                  sizeof first_part);
    size_t len = 0;
    char *counts = status >= 0 ? whole_result(status, &len) : NULL;
    while (counts && len && (counts[len - 1] == '\n' || counts[len - 1] == ' ')) len--;
    if (status < 0) {
        add_failure(&errors, "call", status);
        put_text(&out, "null");
    } else if (counts == NULL || !is_json(counts, len)) {
        add_error(&errors, "call: wordcount's output is not JSON");
        put_text(&out, "null");
    } else {
        put(&out, counts, len);
    }
    free(counts);

    put_text(&request, "{\"messages\": [{\"role\": \"system\", \"content\": "
                       "\"Summarize the user's text in one line.\"}, "
                       "{\"role\": \"user\", \"content\": ");
    put_json_string(&request, text.data, text.len);
    put_text(&request, "}], \"max_tokens\": 16}");
    put_text(&out, ", \"summary\": ");
    status = mercato_infer("summarizer", 10, request.data, request.len, first_part,
                           sizeof first_part);
    char *answer = status >= 0 ? whole_result(status, &len) : NULL;
    const char *content;
    size_t content_len;
    if (status < 0) {
        add_failure(&errors, "infer", status);
        put_text(&out, "null");
    } else if (answer == NULL || !answer_content(answer, len, &content, &content_len)) {
        add_error(&errors, "infer: the answer has no choices[0].message.content");
        put_text(&out, "null");
    } else {
        /* Already valid JSON string content (skip_string checked): copied as is. */
        put_text(&out, "\"");
        put(&out, content, content_len);
        put_text(&out, "\"");
    }
    free(answer);

    put_text(&out, ", \"errors\": [");
    if (errors.len) put(&out, errors.data, errors.len);
    put_text(&out, "]}\n");
    fwrite(out.data, 1, out.len, stdout);
    return 0;
}

/* json-upper: a JSON document in, the same document out with every string
 * *value* in upper case (ASCII letters; keys are left as they are).
 *
 * It transforms as it reads, tracking only whether it is inside a string and
 * whether that string is a key (a string followed by ':'). Input that is not
 * JSON gets an error on stderr and exit status 2; nothing is printed then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *input;
static size_t length;

static int read_all(void) {
    size_t capacity = 65536;
    input = malloc(capacity);
    if (!input) return 0;
    size_t n;
    while ((n = fread(input + length, 1, capacity - length, stdin)) > 0) {
        length += n;
        if (length == capacity) {
            capacity *= 2;
            char *bigger = realloc(input, capacity);
            if (!bigger) return 0;
            input = bigger;
        }
    }
    return !ferror(stdin);
}

/* Index just past the string that starts at the quote at i, or 0 if unterminated. */
static size_t string_end(size_t i) {
    for (i++; i < length; i++) {
        if (input[i] == '\\') i++;
        else if (input[i] == '"') return i + 1;
    }
    return 0;
}

static int followed_by_colon(size_t i) {
    while (i < length && strchr(" \t\r\n", input[i])) i++;
    return i < length && input[i] == ':';
}

int main(void) {
    if (!read_all()) {
        fputs("json-upper: cannot read the input\n", stderr);
        return 2;
    }
    char *out = malloc(length + 1);
    if (!out) return 2;
    int depth = 0;
    for (size_t i = 0; i < length;) {
        char c = input[i];
        if (c == '"') {
            size_t end = string_end(i);
            if (!end) {
                fputs("json-upper: unterminated string\n", stderr);
                return 2;
            }
            int key = followed_by_colon(end);
            for (size_t j = i; j < end; j++) {
                char s = input[j];
                if (!key && s == '\\') { /* keep escapes as they are: \n must stay \n */
                    out[j] = s;
                    out[j + 1] = input[j + 1];
                    j++;
                    continue;
                }
                out[j] = (!key && s >= 'a' && s <= 'z') ? (char)(s - 32) : s;
            }
            i = end;
            continue;
        }
        if (c == '{' || c == '[') depth++;
        if (c == '}' || c == ']') depth--;
        if (depth < 0) {
            fputs("json-upper: unbalanced brackets\n", stderr);
            return 2;
        }
        out[i++] = c;
    }
    if (depth != 0) {
        fputs("json-upper: unbalanced brackets\n", stderr);
        return 2;
    }
    fwrite(out, 1, length, stdout);
    return 0;
}

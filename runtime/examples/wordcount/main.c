/* wordcount: text in, statistics out as JSON:
 *   {"bytes": B, "lines": L, "words": W, "longest_word": N}
 * A word is a run of bytes that are not ASCII whitespace; lines count '\n'. */
#include <stdio.h>

static int is_space(int c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

int main(void) {
    unsigned long long bytes = 0, lines = 0, words = 0, longest = 0, current = 0;
    int c;
    while ((c = getchar()) != EOF) {
        bytes++;
        if (c == '\n') lines++;
        if (is_space(c)) {
            if (current > 0) words++;
            if (current > longest) longest = current;
            current = 0;
        } else {
            current++;
        }
    }
    if (current > 0) words++;
    if (current > longest) longest = current;
    printf("{\"bytes\": %llu, \"lines\": %llu, \"words\": %llu, \"longest_word\": %llu}\n",
           bytes, lines, words, longest);
    return 0;
}

/* echo: the task input, unchanged, as the result. The smallest useful agent. */
#include <stdio.h>

int main(void) {
    char buffer[65536];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, stdin)) > 0) {
        if (fwrite(buffer, 1, n, stdout) != n) return 1;
    }
    return ferror(stdin) ? 1 : 0;
}

/* nnz: the command-line tool. Placeholder until the subcommands land. */
#include <stdio.h>
#include "nnz.h"
int main(void) { printf("nnz %s\n", nnz_version()); return 0; }

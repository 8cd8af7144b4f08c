#ifndef SLUICE_CGLIBCMALLOC_SHIM_H
#define SLUICE_CGLIBCMALLOC_SHIM_H
// glibc's heap statistics and trimming (mallinfo2, malloc_trim), which Swift's Glibc module does not export.
#include <malloc.h>
#endif

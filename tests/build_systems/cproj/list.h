/* A tiny two-file C library for the build-system recipes (CMake, Meson, autotools). */
#ifndef LIST_H
#define LIST_H
struct item { struct item *next; char *name; long value; };
struct item *list_build(int n);
void list_drop_head(struct item **head);   /* forgets the head: a leak on purpose */
#endif

/* copied_slot.c — SQLite's sqlite3NestedParse pattern, found by the map oracle
 * (tests/test_map_oracle.py): pointers saved into a char buffer with memcpy
 * live only there while a call runs. The buffer's type says "no pointers", so
 * the pass records no SLOT for it, and a snapshot taken inside use() misses
 * whatever only the saved copy points to (fixed: such a buffer is a slot whose
 * words are all STORED, scanned conservatively; issue #11). */
#include <string.h>
void use(void *);
struct state { void *p[17]; };
void save_restore(struct state *s) {
    char buf[sizeof *s];
    memcpy(buf, s, sizeof *s);
    memset(s, 0, sizeof *s);
    use(s);
    memcpy(s, buf, sizeof *s);
}

/*
 * The C part of the Python package `esg` (the extension module esg._esg): what its
 * files share. The module follows CPython's Modules/_sqlite: multi-phase init, a
 * module-state struct instead of globals, heap types, one exception tree rooted at
 * esg.Error filled from the C status codes by one function (esgpy_raise).
 *
 * Only the public C API is used: esg.h.
 */
#ifndef ESGPY_H
#define ESGPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "esg.h"
#include "pythread.h"

/* Error classes are indexed by -code; every negative code of ESG_STATUS_MAP gets one. */
#define ESGPY_MAX_ERRORS 64
/* How many outcome names Gateway.push and resubmit answer with (gateway.c). */
#define ESGPY_GW_NOUTCOMES 11

typedef struct esgpy_state {
  PyObject *Error;
  PyObject *errors[ESGPY_MAX_ERRORS]; /* errors[-code]: the class for that code */
  PyObject *BusyError;
  PyTypeObject *StoreType;
  PyTypeObject *EventType;
  PyTypeObject *ClaimType;
  PyTypeObject *EntityType;
  PyTypeObject *FaultType;
  PyTypeObject *CacheType;
  PyTypeObject *CacheEntryType;
  PyTypeObject *CacheStatsType;
  PyTypeObject *ResyncStatsType;
  PyTypeObject *SnapshotType;
  PyTypeObject *EgressType;
  PyTypeObject *EgressResultType;
  PyTypeObject *EgressStatsType;
  PyTypeObject *GatewayType;
  PyTypeObject *GatewayContextType;
  PyTypeObject *GatewayFaultType;
  PyObject *ABSENT; /* esg.ABSENT: a loader's "known absent" */
  PyObject *json_dumps; /* compact json.dumps: a JSONEncoder's encode */
  PyObject *json_loads;
  PyObject *json_scan;  /* json's C scanner (scan_once(str, idx) -> (value, end)), or NULL */
  PyObject *json_sorted; /* json_dumps with the members sorted by name (the gateway's JSON, as Lua's) */
  PyObject *json_fast;  /* json's C encoder with json_sorted's options, built once, or NULL */
  PyObject *s_new, *s_duplicate, *s_busy, *s_stored, *s_applied, *s_stale;
  PyObject *s_hit, *s_miss, *s_negative, *s_echo, *s_genuine, *s_fired, *s_fired_before, *s_no_match;
  PyObject *s_outcomes[4]; /* egress outcome names */
  PyObject *s_gw[ESGPY_GW_NOUTCOMES]; /* gateway outcome names (gateway.c) */
} esgpy_state;

extern struct PyModuleDef esgpy_module_def;
esgpy_state *esgpy_state_of_module(PyObject *module);
esgpy_state *esgpy_state_of_type(PyTypeObject *tp);

/* obj as compact JSON (str) with the members sorted by name, as json_sorted gives it but faster
   (no circular check: a cycle is a RecursionError): what a gateway's steps return, written as
   Lua writes a table. New reference, or NULL with the exception. */
PyObject *esgpy_json_fast(esgpy_state *st, PyObject *obj);
/* Raises the esg.Error subclass for code, carrying code, name and msg (or the code's text). Returns NULL. */
PyObject *esgpy_raise(esgpy_state *st, int code, const char *msg);
/* The class esgpy_raise uses for code (borrowed). */
PyObject *esgpy_error_class(esgpy_state *st, int code);

/*
 * Argument parsing for METH_FASTCALL|METH_KEYWORDS: fills out[0..n) from the
 * positional and keyword arguments by the names in kw (NULL-terminated), NULL for
 * those not given. The first nreq are required. Returns 0, or -1 with TypeError.
 */
int esgpy_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const *kw, int nreq, PyObject **out);

/* A str argument as UTF-8 (owned by obj); TypeError/ValueError for non-str or NUL inside. */
const char *esgpy_str(PyObject *obj, const char *what, Py_ssize_t *len);
/* Seconds (int or float) to milliseconds; -1 with an exception on error. */
int esgpy_seconds_ms(PyObject *obj, const char *what, int64_t *ms);
/* The same for a duration that must be positive (a lease, a ttl): InvalidArgumentError in
   seconds, the caller's unit, naming what. */
int esgpy_positive_seconds_ms(esgpy_state *st, PyObject *obj, const char *what, int64_t *ms);
/* An integer argument (not bool); OverflowError naming it beyond int64. */
int esgpy_int64(PyObject *obj, const char *what, int64_t *out);
/* A real number argument (int or float, not bool) as a double; errors name it. 0 or -1. */
int esgpy_float(PyObject *obj, const char *what, double *out);
/* Milliseconds to float seconds. */
PyObject *esgpy_ms_seconds(int64_t ms);

/*
 * JSON text for obj: bytes-like objects and str are taken as JSON text, anything
 * else (dict, list, ...) is serialised with json.dumps. *keep receives a new
 * reference that owns *data until released (PyBuffer in *view when used).
 * Returns 0, or -1 with an exception (TypeError for what cannot be serialised).
 */
typedef struct esgpy_bytes {
  Py_buffer view;
  int has_view;
  PyObject *keep;
  const char *data;
  Py_ssize_t len;
} esgpy_bytes;
int esgpy_json_bytes(esgpy_state *st, PyObject *obj, const char *what, esgpy_bytes *out);
/* Bytes-like or str only (no serialising). */
int esgpy_raw_bytes(PyObject *obj, const char *what, esgpy_bytes *out);
void esgpy_bytes_release(esgpy_bytes *b);

/*
 * A Store. Objects built on it (caches, egress engines, snapshots) hold a strong
 * reference to it, so it outlives them; closing it first detaches their C handles
 * (libesg), which they free in their own close, and they then raise StateError.
 */
typedef struct {
  PyObject_HEAD
  esg_store *s;
  PyThread_type_lock lock;
  unsigned long owner; /* thread inside a call on this store, 0 when none */
  PyObject *clock;     /* callable returning seconds, or NULL */
  PyObject *clock_type, *clock_value, *clock_tb; /* the clock's pending exception */
  int64_t last_now;
  PyObject *path;
  esgpy_state *st;     /* the module state, kept to save a lookup per call */
  long pid;            /* the process that opened it (0 before): a forked child must not use it */
  /* A gateway step runs on the owner thread while the owner is inside a call (the gateway's):
     lent > 0 lets one call from there in (nested = 1 while it runs; deeper ones are refused, as
     the C library is then inside that call). See esgpy_store_lend. */
  int lent, nested;
} StoreObject;

/* True in a process other than pid (a forked child of the process that opened the object): its
   locks may be held by threads that do not exist here, its C handles are the parent's. */
int esgpy_forked(long pid);
/* This process's id (for an object's pid at open; cached, refreshed by fork). */
long esgpy_pid(void);
/* Raises StateError "<what> was opened by process P; open it again in this process (pid C)". NULL. */
PyObject *esgpy_raise_forked(esgpy_state *st, const char *what, long pid);

/* The module state of a Store (kept in it once initialised). */
static inline esgpy_state *esgpy_store_state(PyObject *self) {
  esgpy_state *st = ((StoreObject *)self)->st;
  return st ? st : esgpy_state_of_type(Py_TYPE(self));
}

/* Takes the store's lock for one call (StateError when closed or re-entered from a callback). 0 or -1. */
int esgpy_store_enter(StoreObject *self);
/* Around a gateway step (GIL held, on the thread inside the gateway's call): the step may call
   the store, one call deep, as the C gateway's steps may (between its own store calls). */
static inline void esgpy_store_lend(StoreObject *self) { self->lent++; }
static inline void esgpy_store_unlend(StoreObject *self) { self->lent--; }
void esgpy_store_leave(StoreObject *self);
/* For closing objects built on the store, which must not use it unlocked: takes its lock with the
   GIL released. 1: taken (give it back with esgpy_store_final_leave); 0: this thread holds it
   already (inside a call on the store; close() then refuses with esgpy_store_in_use, a finalizer
   goes on); -1: a forked child's copy, never to be touched (libesg's closes there touch nothing
   of the parent's). */
int esgpy_store_final_enter(StoreObject *self);
void esgpy_store_final_leave(StoreObject *self, int entered);
/* Raises StateError: the store is inside a call on this thread (a call from one of its callbacks). NULL. */
PyObject *esgpy_store_in_use(StoreObject *self);
/* After a C call: raises the clock's pending exception, or the error for rc < 0 with the store's text. 0 or -1. */
int esgpy_store_check(StoreObject *self, int rc);
/* esgpy_store_check then leave; returns NULL. */
PyObject *esgpy_store_fail(StoreObject *self, int rc);
/* obj as a StoreObject, or NULL with TypeError. */
StoreObject *esgpy_store_arg(esgpy_state *st, PyObject *obj);

/* Copies of stored events handed over by a C query (taken with the GIL released). */
typedef struct esgpy_collected {
  char **json;
  size_t *len;
  size_t n, cap;
} esgpy_collected;
int esgpy_collect_cb(void *ud, const esg_stored_event *ev);
void esgpy_collected_free(esgpy_collected *c);
/* A list of the collected events, as dicts (bytes with raw). */
PyObject *esgpy_collected_list(esgpy_state *st, esgpy_collected *c, int raw);
/* JSON text to a Python value (bytes with raw). */
PyObject *esgpy_json_item(esgpy_state *st, const char *json, size_t len, int raw);
/* A truthy argument (absent = 0). 0 or -1. */
int esgpy_flag(PyObject *obj, int *out);
/* The text of the pending exception as "Type: message" into buf; the exception stays set. */
void esgpy_exc_text(char *buf, size_t size);

/* util.c: what the type files share. */
/* An optional str argument (absent or None: *out = NULL). 0 or -1. */
int esgpy_opt_str(PyObject *obj, const char *what, const char **out);
/* An optional int argument from 0 to INT32_MAX (absent or None: 0); ValueError outside. 0 or -1. */
int esgpy_opt_int32(PyObject *obj, const char *what, int *out);
/* obj as a C event: an Event's handle, else parsed into *own (free it with esg_event_free). NULL on error. */
const esg_event *esgpy_event_arg(esgpy_state *st, PyObject *obj, esg_event **own);
/* C text as str (invalid UTF-8 replaced); None for NULL. */
PyObject *esgpy_utf8_or_none(const char *s);
/* A filled struct sequence t of n items, or NULL (t released) when one of them failed. */
PyObject *esgpy_struct_checked(PyObject *t, int n);
/* Takes the pending exception as its normalised value with its traceback attached (new reference). */
PyObject *esgpy_fetch_exc(void);
/* __enter__ of the objects that close: returns self. */
PyObject *esgpy_return_self(PyObject *self, PyObject *unused);
/* __exit__ from what close() returned: False, or NULL when close raised. */
PyObject *esgpy_exit_result(PyObject *closed);
/* Enters store for a call on obj, built on it (is_open tells whether obj is open and its store
   too, which closing detaches it; asked again once the store's lock is held). -1 with StateError
   (closed_msg) when closed. */
int esgpy_dep_enter(PyObject *obj, StoreObject *store, int (*is_open)(PyObject *obj), const char *closed_msg);
/* A purge of the store's expired records (GIL released): how many, as an int. */
typedef int (*esgpy_purge_fn)(esg_store *s, int64_t *n);
PyObject *esgpy_store_purge(StoreObject *self, esgpy_purge_fn fn);
/* esgpy_store_check then esgpy_store_leave. 0, or -1 with the exception set. */
int esgpy_store_done(StoreObject *self, int rc);
/* After a C call collecting into c: leaves the store; on failure frees c and raises (MemoryError for a
   failed copy, ESG_ECALLBACK). rc, or -1. */
int esgpy_collect_done(StoreObject *self, int rc, esgpy_collected *c);

/* A METH_FASTCALL|METH_KEYWORDS function (first argument: the object or the module). */
#define ESGPY_FASTCALL(name) PyObject *name(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
/* Method table shorthands. */
#define FAST (METH_FASTCALL | METH_KEYWORDS)
#define FN(f) (PyCFunction)(void (*)(void))(f)

/* Store methods defined in other files (faults.c, latch.c, resync.c). */
ESGPY_FASTCALL(esgpy_store_record_fault);
ESGPY_FASTCALL(esgpy_store_faults);
ESGPY_FASTCALL(esgpy_store_get_fault);
ESGPY_FASTCALL(esgpy_store_delete_fault);
ESGPY_FASTCALL(esgpy_store_purge_faults);
ESGPY_FASTCALL(esgpy_store_correlate);
ESGPY_FASTCALL(esgpy_store_latch);
ESGPY_FASTCALL(esgpy_store_latch_check);
ESGPY_FASTCALL(esgpy_store_latch_cancel);
ESGPY_FASTCALL(esgpy_store_latch_pending);
ESGPY_FASTCALL(esgpy_store_cursor_get);
ESGPY_FASTCALL(esgpy_store_cursor_set);
ESGPY_FASTCALL(esgpy_store_cursor_delete);
ESGPY_FASTCALL(esgpy_store_cursor_run);
ESGPY_FASTCALL(esgpy_store_snapshot);
ESGPY_FASTCALL(esgpy_store_replay);
PyObject *esgpy_store_purge_latches(PyObject *self, PyObject *unused);
PyObject *esgpy_latch_flagged(PyObject *module, PyObject *arg);
ESGPY_FASTCALL(esgpy_latch_mark);
extern PyType_Spec esgpy_cache_spec;
extern PyType_Spec esgpy_snapshot_spec;
extern PyType_Spec esgpy_egress_spec;
/* The engine options Egress and the gateway's HTTP sink share, by name (NULL-terminated): a[i]
   is the value of esgpy_egress_opt_names[i] or NULL. 0, or -1 with the error naming the option. */
#define ESGPY_EGRESS_NOPTS 17
extern const char *const esgpy_egress_opt_names[ESGPY_EGRESS_NOPTS + 1];
int esgpy_egress_opts(PyObject *const *a, esg_egress_opts *o);
/* The same for the cache options (Cache and the gateway's enrich cache); the strings point into
   the objects of a[], which must outlive the options. */
#define ESGPY_CACHE_NOPTS 12
extern const char *const esgpy_cache_opt_names[ESGPY_CACHE_NOPTS + 1];
int esgpy_cache_opts(PyObject *const *a, esg_cache_opts *o);
/* A Python loader called for the C cache (takes the GIL): loader(key), or loader(key, deadline)
   with pass_deadline. A failure's Exception goes to *exc, a BaseException that must propagate to
   *fatal (each replacing what was there). With sorted, a value that is not text is written with
   its members sorted by name (a gateway's loader: as Lua writes a table). The esg_cache_loader's
   return value. */
int esgpy_load(esgpy_state *st, PyObject *loader, int pass_deadline, int sorted, int64_t ttl, const char *key,
               int64_t deadline, esg_cache_load *ld, PyObject **exc, PyObject **fatal);
/* gateway.c: the type specs, the module's part, and the gateway as a resync sink (cursor_run,
   snapshot): esgpy_gateway_sink fills o->sink for a Gateway on store (-1 with TypeError or
   StateError, else 0; 1 when obj is not a Gateway). */
extern PyType_Spec esgpy_gateway_spec;
extern PyType_Spec esgpy_gateway_context_spec;
int esgpy_gateway_init(PyObject *module, esgpy_state *st);
int esgpy_gateway_sink(esgpy_state *st, PyObject *obj, StoreObject *store, esg_resync_opts *o);
/* Around each C call that may emit into a Gateway sink (with the store entered): marks the gateway
   as running this thread's call (its steps then get ctx; refused if it runs already), and after it
   clears that and raises what its steps left pending. 0 or -1. */
int esgpy_gateway_sink_enter(PyObject *obj);
int esgpy_gateway_sink_done(PyObject *obj);
ESGPY_FASTCALL(esgpy_egress_retryable);
ESGPY_FASTCALL(esgpy_parse_retry_after);

/* Type specs and helpers of the other files. */
extern PyType_Spec esgpy_store_spec;
extern PyType_Spec esgpy_event_spec;
int esgpy_event_check(esgpy_state *st, PyObject *obj);
const esg_event *esgpy_event_handle(PyObject *obj);
/* Parses obj (Event, bytes, str, dict) into a new C event; NULL with EventError/JSONError/TypeError. */
esg_event *esgpy_parse(esgpy_state *st, PyObject *obj);
PyObject *esgpy_event_new(esgpy_state *st, esg_event *ev);

/* Module-level functions defined in event.c and webhook.c. */
PyObject *esgpy_parse_event(PyObject *module, PyObject *arg);
PyObject *esgpy_sha256(PyObject *module, PyObject *arg);
PyObject *esgpy_content_hash(PyObject *module, PyObject *arg);
PyObject *esgpy_content_digest(PyObject *module, PyObject *arg);
ESGPY_FASTCALL(esgpy_uuid5);
ESGPY_FASTCALL(esgpy_webhook_sign);
ESGPY_FASTCALL(esgpy_webhook_verify);
PyObject *esgpy_webhook_secret(PyObject *module, PyObject *unused);
int esgpy_webhook_add_constants(PyObject *module);

#endif

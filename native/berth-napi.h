/*
 * The N-API plumbing berth's asynchronous addon calls share: reading a string property whole,
 * queueing a job on a libuv worker behind a promise, settling that promise, exporting a function.
 */
#ifndef BERTH_NAPI_H
#define BERTH_NAPI_H

#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

/*
 * obj[key] as a string into out: 1 when read, 0 when absent or undefined, -1 when not a string,
 * empty, or too long for out.
 */
static inline int berth_string_prop(napi_env env, napi_value obj, const char *key, char *out, size_t size) {
  bool has = false;
  napi_value v;
  napi_valuetype type;
  size_t n = 0;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return 0;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_typeof(env, v, &type) != napi_ok) return -1;
  if (type == napi_undefined) return 0;
  /* The whole length first: a copy that fills the buffer may have been cut. */
  if (type != napi_string || napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok || n == 0 || n >= size) return -1;
  if (napi_get_value_string_utf8(env, v, out, size, &n) != napi_ok) return -1;
  return 1;
}

/* Runs execute then complete on a worker thread for `job`; NULL (nothing queued) on failure. */
static inline napi_value berth_queue_job(napi_env env, const char *name, napi_async_execute_callback execute,
                                         napi_async_complete_callback complete, void *job,
                                         napi_deferred *deferred, napi_async_work *work) {
  napi_value promise, label;
  if (napi_create_promise(env, deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &label) != napi_ok ||
      napi_create_async_work(env, NULL, label, execute, complete, job, work) != napi_ok ||
      napi_queue_async_work(env, *work) != napi_ok) {
    return NULL;
  }
  return promise;
}

/* Resolves with undefined when err is 0, otherwise rejects with "<what>: <strerror(err)>"; frees the work. */
static inline void berth_settle(napi_env env, napi_status status, napi_deferred deferred, napi_async_work work, int err, const char *what) {
  if (status == napi_ok && err == 0) {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, deferred, undef);
  } else {
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(err ? err : EIO));
    napi_value text, error;
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
    napi_create_error(env, NULL, text, &error);
    napi_reject_deferred(env, deferred, error);
  }
  napi_delete_async_work(env, work);
}

static inline void berth_export(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f) == napi_ok) napi_set_named_property(env, exports, name, f);
}

#endif

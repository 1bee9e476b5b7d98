/*
 * _pyctl: run Python code in one thread and break, continue or stop it from
 * another thread, at the cost of an untraced run while nobody asks for it.
 *
 * How it works
 * ------------
 * A Controller runs a callable (start) or a code object (start_exec) in the
 * calling thread, the "script thread".  While no request is pending, no trace
 * function is installed on that thread, so the code runs at full interpreter
 * speed.  set_break() and set_stop(), called from any thread, record the
 * request and install our C trace function on the script thread's
 * PyThreadState with _PyEval_SetTrace(tstate, ...).  CPython 3.11 evaluates
 * the "tracing enabled" flag before every instruction of the running frame,
 * so the trace function sees the next line event of the script thread.  It
 * ignores frames that are not eligible (see below), and at the first eligible
 * line it acts: for a break it removes itself and calls breakfunc(frame, arg)
 * in the script thread (status INBREAK while it runs); for a stop it raises
 * ControlStop(arg) in the script's frame (status STOPPING).
 *
 * After a stop the trace function stays until the run ends, watching for a
 * script that catches the ControlStop and goes on: an eligible line that runs
 * while no ControlStop is being handled (handling_stop) gets the same stop
 * raised again, after the ignored handler was told.  An insisting stop
 * (set_stop(insist=True)) stays pending after raising: every eligible line,
 * breakpoint() and wait() raises it again, cleanup code included.
 *
 * stop_thread() does the same for other threads, with a small trace object
 * of its own (ThreadStop) that the target thread's state owns.
 *
 * Once, at start, the trace function is installed for the first "call" event
 * only: that event names the toplevel frame of the run, which we keep.
 *
 * Eligible frames: with break_only_in_toplevel, only the toplevel frame; with
 * break_only_in_filename, every frame whose code has that file name (so
 * functions defined in the script are reachable); otherwise every frame.
 *
 * The current line is not tracked while running: the lineno and currentframe
 * attributes walk the script thread's frame stack on demand, from the
 * innermost frame outwards to the first eligible frame.  LINENO_TRACE_ALL
 * keeps the trace function installed for the whole run and calls the
 * observer on every change of line, for those who want every line.
 *
 * Why it is safe
 * --------------
 * - Every entry point is called with the GIL held, and the GIL serialises all
 *   access to the controller's fields and to the script thread's tstate.
 *   _PyEval_SetTrace is documented (in ceval.c) to accept a thread state other
 *   than the current one when the caller holds the GIL; it only swaps two
 *   fields and recomputes the tracing flag of the target's current C frame,
 *   which cannot change while the target thread waits for the GIL.
 * - The tstate pointer is stored when a run begins and cleared, with the GIL
 *   held, before the run returns; a request for a controller that is idle is
 *   refused with RuntimeError.  The thread state therefore cannot be used
 *   after the script thread has finished with the controller.  A request still
 *   pending when the script ends is dropped and the trace function removed by
 *   the script thread itself.
 * - The trace function holds a reference to the controller (as the trace
 *   object), so the controller outlives any installed trace.
 * - A tracer that was installed before ours (a debugger, coverage) is saved
 *   and put back when ours removes itself.
 *
 * What cannot be interrupted: code running in C without executing Python
 * lines (a long builtin call, a blocking system call).  The request acts when
 * control comes back to Python; the wrapper's interruptible wait covers the
 * common case of a script that sleeps.  Neither tracing nor an asynchronous
 * exception can do more: both act only between bytecodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030C0000
#error "pyctl targets CPython 3.11 (it relies on _PyEval_SetTrace semantics of that version)"
#endif

enum status_t {
    STATUS_IDLEEXC = -2,
    STATUS_IDLE = -1,
    STATUS_RUNNING = 0,
    STATUS_INBREAK = 1,
    STATUS_STOPPING = 2,
};

enum request_t { REQUEST_NONE = 0, REQUEST_BREAK = 1, REQUEST_STOP = 2 };

enum lineno_t { LINENO_ON_DEMAND = 0, LINENO_TRACE_ALL = 1 };

static PyObject *ControlStop;

typedef struct {
    PyObject_HEAD
    PyObject *breakfunc;
    PyObject *observer;
    PyObject *filename;       /* str or NULL */
    int toplevel_only;
    int lineno_mode;
    int status;
    int last_lineno;
    int request;
    PyObject *request_arg;    /* owned, NULL when no request */
    PyThreadState *tstate;    /* the script thread, only while running */
    PyObject *base_frame;     /* caller of start(), owned or NULL */
    PyObject *toplevel;       /* first frame of the run, owned or NULL */
    PyObject *toplevel_code;  /* code the toplevel frame runs, if known; owned or NULL */
    PyObject *break_frame;    /* frame of the current break, owned or NULL */
    int trace_installed;
    int in_callback;          /* >0 while breakfunc or observer runs */
    Py_tracefunc saved_func;  /* tracer displaced by ours */
    PyObject *saved_obj;
    int insist;               /* the stop request stays armed after raising */
    PyObject *stop_arg;       /* argument of the ControlStop raised last, owned or NULL */
    PyObject *ignored_handler; /* called when a raised ControlStop was swallowed, or NULL */
} Controller;

/* ---------------------------------------------------------------- tracing */

static int trace_func(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg);

static int
install_trace(Controller *self)
{
    if (self->trace_installed || self->tstate == NULL)
        return 0;
    PyThreadState *ts = self->tstate;
    if (ts->c_tracefunc != trace_func) {
        self->saved_func = ts->c_tracefunc;
        Py_XINCREF(ts->c_traceobj);
        Py_XSETREF(self->saved_obj, ts->c_traceobj);
    }
    if (_PyEval_SetTrace(ts, trace_func, (PyObject *)self) < 0)
        return -1;
    self->trace_installed = 1;
    return 0;
}

static void
uninstall_trace(Controller *self)
{
    if (!self->trace_installed || self->tstate == NULL)
        return;
    PyObject *saved_obj = self->saved_obj;   /* _PyEval_SetTrace takes its own reference */
    Py_tracefunc saved_func = self->saved_func;
    self->saved_obj = NULL;
    self->saved_func = NULL;
    self->trace_installed = 0;
    if (_PyEval_SetTrace(self->tstate, saved_func, saved_obj) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_XDECREF(saved_obj);
}

/* Calls the observer without disturbing a pending exception. */
static void
set_status(Controller *self, int status, int lineno)
{
    self->status = status;
    if (self->observer == NULL)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    self->in_callback++;
    PyObject *res = PyObject_CallFunction(self->observer, "ii", status, lineno);
    self->in_callback--;
    if (res == NULL)
        PyErr_WriteUnraisable(self->observer);
    Py_XDECREF(res);
    PyErr_Restore(type, value, tb);
}

static int
filename_matches(PyObject *filename, PyFrameObject *frame)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *fn = code->co_filename;
    int same = (fn == filename) ||
               (PyUnicode_Check(fn) && PyUnicode_Compare(fn, filename) == 0);
    Py_DECREF(code);
    return same;
}

/* Whether the thread is inside an except or finally block that runs because
   of a ControlStop.  In 3.11 only the innermost handled exception of a frame
   is in the thread's exception stack (an outer one waits on the frame's
   value stack), but every exception raised while a ControlStop is handled
   has it in its __context__ chain, so cleanup that handles exceptions of its
   own is still recognised.  A generator closed while the stop unwinds
   (GeneratorExit) counts as cleanup too: the ControlStop in flight is not
   visible from its finally block. */
static int
handling_stop(PyThreadState *ts)
{
    for (_PyErr_StackItem *item = ts->exc_info; item != NULL; item = item->previous_item) {
        if (item->exc_value == NULL || item->exc_value == Py_None)
            continue;
        PyObject *exc = Py_NewRef(item->exc_value);
        /* bounded: a __context__ cycle can be built by hand */
        for (int depth = 0; exc != NULL && depth < 100; depth++) {
            if (PyErr_GivenExceptionMatches(exc, ControlStop) ||
                PyErr_GivenExceptionMatches(exc, PyExc_GeneratorExit)) {
                Py_DECREF(exc);
                return 1;
            }
            PyObject *context = PyExceptionInstance_Check(exc) ? PyException_GetContext(exc) : NULL;
            Py_DECREF(exc);
            exc = context;
        }
        Py_XDECREF(exc);
    }
    return 0;
}

static int
frame_is_eligible(Controller *self, PyFrameObject *frame)
{
    if (self->toplevel_only)
        return (PyObject *)frame == self->toplevel;
    if (self->filename != NULL)
        return filename_matches(self->filename, frame);
    return 1;
}

static PyObject *
take_request_arg(Controller *self)
{
    PyObject *arg = self->request_arg ? self->request_arg : Py_NewRef(Py_None);
    self->request_arg = NULL;
    self->request = REQUEST_NONE;
    return arg;
}

/* Sets ControlStop(arg) as the current exception; status becomes STOPPING
   (reported once: an insisting stop raises again at every line). */
static void
raise_stop(Controller *self, PyObject *arg, int lineno)
{
    Py_XSETREF(self->stop_arg, Py_NewRef(arg));
    if (self->status != STATUS_STOPPING)
        set_status(self, STATUS_STOPPING, lineno);
    PyObject *exc = PyObject_CallOneArg(ControlStop, arg);
    if (exc != NULL) {
        PyErr_SetObject(ControlStop, exc);
        Py_DECREF(exc);
    }
}

/* The argument of the stop to raise now: an insisting stop stays pending, so
   that the next line, breakpoint() and wait() act on it again. */
static PyObject *
stop_request_arg(Controller *self)
{
    if (self->insist)
        return Py_NewRef(self->request_arg ? self->request_arg : Py_None);
    return take_request_arg(self);
}

static int
do_stop(Controller *self, PyFrameObject *frame)
{
    PyObject *arg = stop_request_arg(self);
    /* the trace stays while STOPPING: it notices a swallowed ControlStop
       and re-raises an insisting one */
    if (install_trace(self) < 0) {
        Py_DECREF(arg);
        return -1;
    }
    int lineno = PyFrame_GetLineNumber(frame);
    self->last_lineno = lineno;
    raise_stop(self, arg, lineno);
    Py_DECREF(arg);
    return -1;
}

static int
do_break(Controller *self, PyFrameObject *frame)
{
    PyObject *arg = take_request_arg(self);
    if (self->lineno_mode == LINENO_ON_DEMAND)
        uninstall_trace(self);
    int lineno = PyFrame_GetLineNumber(frame);
    self->last_lineno = lineno;
    Py_XSETREF(self->break_frame, Py_NewRef((PyObject *)frame));
    set_status(self, STATUS_INBREAK, lineno);
    self->in_callback++;
    PyObject *res = PyObject_CallFunctionObjArgs(self->breakfunc, (PyObject *)frame, arg, NULL);
    self->in_callback--;
    Py_DECREF(arg);
    Py_CLEAR(self->break_frame);
    if (res == NULL) {
        if (PyErr_ExceptionMatches(ControlStop)) {
            if (self->status != STATUS_STOPPING)
                set_status(self, STATUS_STOPPING, lineno);
        }
        else
            set_status(self, STATUS_RUNNING, lineno);
        return -1;
    }
    Py_DECREF(res);
    set_status(self, STATUS_RUNNING, lineno);
    return 0;
}

/* A line of eligible code runs while STOPPING, and no ControlStop is being
   handled: the script caught the stop and went on.  The handler (if any) is
   told, and may re-arm the stop (insisting); otherwise the same stop is
   raised again here. */
static int
stop_ignored(Controller *self, PyFrameObject *frame)
{
    PyObject *arg = Py_NewRef(self->stop_arg ? self->stop_arg : Py_None);
    if (self->ignored_handler != NULL) {
        PyObject *handler = Py_NewRef(self->ignored_handler);
        self->in_callback++;
        PyObject *res = PyObject_CallFunctionObjArgs(handler, (PyObject *)frame, arg, NULL);
        self->in_callback--;
        if (res == NULL)
            PyErr_WriteUnraisable(handler);
        Py_XDECREF(res);
        Py_DECREF(handler);
    }
    if (self->request != REQUEST_STOP) {
        self->request = REQUEST_STOP;
        Py_XSETREF(self->request_arg, Py_NewRef(arg));
    }
    Py_DECREF(arg);
    return do_stop(self, frame);
}

/* Whether frame runs the code the run was started with.  Other Python code
   may run first in the script thread (a gc callback, an audit hook), and
   must not be taken for the toplevel frame. */
static int
is_toplevel_code(Controller *self, PyFrameObject *frame)
{
    if (self->toplevel_code == NULL)
        return 1;   /* unknown (e.g. a C callable): the first call it is */
    PyCodeObject *code = PyFrame_GetCode(frame);
    int same = (PyObject *)code == self->toplevel_code;
    Py_DECREF(code);
    return same;
}

static int
trace_func(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    Controller *self = (Controller *)obj;
    if (self->in_callback)
        return 0;
    if (what == PyTrace_CALL) {
        if (self->toplevel == NULL && is_toplevel_code(self, frame)) {
            self->toplevel = Py_NewRef((PyObject *)frame);
            if (self->request == REQUEST_NONE && self->lineno_mode == LINENO_ON_DEMAND)
                uninstall_trace(self);
        }
        return 0;
    }
    if (what != PyTrace_LINE || !frame_is_eligible(self, frame))
        return 0;
    if (self->lineno_mode == LINENO_TRACE_ALL && self->status == STATUS_RUNNING) {
        int lineno = PyFrame_GetLineNumber(frame);
        if (lineno != self->last_lineno) {
            self->last_lineno = lineno;
            set_status(self, STATUS_RUNNING, lineno);
        }
    }
    switch (self->request) {
    case REQUEST_STOP:
        return do_stop(self, frame);
    case REQUEST_BREAK:
        return do_break(self, frame);
    default:
        break;
    }
    if (self->status == STATUS_STOPPING && !handling_stop(PyThreadState_Get()))
        return stop_ignored(self, frame);
    return 0;
}

/* ------------------------------------------------------------ frame lookup */

/* New reference to the eligible frame the script thread executes now, or NULL
   (without exception) when there is none. */
static PyFrameObject *
find_eligible_frame(Controller *self)
{
    if (self->tstate == NULL)
        return NULL;
    if (self->break_frame != NULL)
        return (PyFrameObject *)Py_NewRef(self->break_frame);
    PyFrameObject *frame = PyThreadState_GetFrame(self->tstate);
    while (frame != NULL) {
        if ((PyObject *)frame == self->base_frame) {
            Py_DECREF(frame);
            return NULL;
        }
        if (frame_is_eligible(self, frame))
            return frame;
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    return NULL;
}

/* ------------------------------------------------------------- running */

static int
check_can_start(Controller *self)
{
    if (self->status >= STATUS_RUNNING) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot start: the controller is already running a script");
        return -1;
    }
    return 0;
}

static void
begin_run(Controller *self, PyObject *code)
{
    Py_XSETREF(self->toplevel_code, Py_XNewRef(code));
    self->tstate = PyThreadState_Get();
    PyFrameObject *caller = PyEval_GetFrame();   /* borrowed */
    Py_XSETREF(self->base_frame, Py_XNewRef((PyObject *)caller));
    Py_CLEAR(self->toplevel);
    Py_CLEAR(self->break_frame);
    Py_CLEAR(self->request_arg);
    Py_CLEAR(self->stop_arg);
    self->request = REQUEST_NONE;
    self->insist = 0;
    self->last_lineno = -1;
    set_status(self, STATUS_RUNNING, -1);
    /* catches the first call event, which names the toplevel frame */
    if (install_trace(self) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
}

static PyObject *
end_run(Controller *self, PyObject *result)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    uninstall_trace(self);
    /* the toplevel frame may be a wrapper outside the eligible code */
    if (self->toplevel != NULL && frame_is_eligible(self, (PyFrameObject *)self->toplevel))
        self->last_lineno = PyFrame_GetLineNumber((PyFrameObject *)self->toplevel);
    Py_CLEAR(self->toplevel);
    Py_CLEAR(self->toplevel_code);
    Py_CLEAR(self->base_frame);
    Py_CLEAR(self->break_frame);
    Py_CLEAR(self->request_arg);
    Py_CLEAR(self->stop_arg);
    self->request = REQUEST_NONE;
    self->insist = 0;
    self->tstate = NULL;
    PyErr_Restore(type, value, tb);
    set_status(self, result != NULL ? STATUS_IDLE : STATUS_IDLEEXC, self->last_lineno);
    return result;
}

static PyObject *
Controller_start(Controller *self, PyObject *callable)
{
    if (check_can_start(self) < 0)
        return NULL;
    if (!PyCallable_Check(callable)) {
        PyErr_SetString(PyExc_TypeError, "start() needs a callable");
        return NULL;
    }
    PyObject *func = PyMethod_Check(callable) ? PyMethod_GET_FUNCTION(callable) : callable;
    Py_INCREF(self);
    begin_run(self, PyFunction_Check(func) ? PyFunction_GET_CODE(func) : NULL);
    PyObject *result = end_run(self, PyObject_CallNoArgs(callable));
    Py_DECREF(self);
    return result;
}

static PyObject *
Controller_start_exec(Controller *self, PyObject *args)
{
    PyObject *code, *globals, *locals = NULL;
    if (!PyArg_ParseTuple(args, "O!O!|O:start_exec", &PyCode_Type, &code,
                          &PyDict_Type, &globals, &locals))
        return NULL;
    if (locals == Py_None)
        locals = NULL;
    if (locals != NULL && !PyMapping_Check(locals)) {
        PyErr_SetString(PyExc_TypeError, "start_exec(): locals must be a mapping");
        return NULL;
    }
    if (check_can_start(self) < 0)
        return NULL;
    if (PyDict_GetItemString(globals, "__builtins__") == NULL &&
        PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0)
        return NULL;
    Py_INCREF(self);
    begin_run(self, code);
    PyObject *result = end_run(self, PyEval_EvalCode(code, globals, locals ? locals : globals));
    Py_DECREF(self);
    return result;
}

/* ------------------------------------------------------------ requests */

static int
check_running(Controller *self, const char *what)
{
    if (self->status < STATUS_RUNNING || self->tstate == NULL) {
        PyErr_Format(PyExc_RuntimeError, "cannot %s: no script is running", what);
        return -1;
    }
    return 0;
}

static PyObject *
Controller_set_break(Controller *self, PyObject *args)
{
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O:set_break", &arg))
        return NULL;
    if (check_running(self, "break") < 0)
        return NULL;
    if (self->status == STATUS_INBREAK) {
        PyErr_SetString(PyExc_RuntimeError, "cannot break: the script is already in break");
        return NULL;
    }
    if (self->status == STATUS_STOPPING) {
        /* a break would pause the script's cleanup and lose the stopping state */
        PyErr_SetString(PyExc_RuntimeError, "cannot break: the script is stopping");
        return NULL;
    }
    if (self->request == REQUEST_STOP)   /* a pending stop wins over a break */
        Py_RETURN_NONE;
    self->request = REQUEST_BREAK;
    Py_XSETREF(self->request_arg, Py_NewRef(arg));
    if (install_trace(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Controller_set_stop(Controller *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"arg", "insist", NULL};
    PyObject *arg = Py_None;
    int insist = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Op:set_stop", kwlist, &arg, &insist))
        return NULL;
    if (check_running(self, "stop") < 0)
        return NULL;
    self->request = REQUEST_STOP;
    /* once insisting, always insisting: a later plain stop must not let
       the script's cleanup run on */
    self->insist = self->insist || insist;
    Py_XSETREF(self->request_arg, Py_NewRef(arg));
    if (install_trace(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Controller_breakpoint(Controller *self, PyObject *unused)
{
    if (self->tstate == NULL || self->tstate != PyThreadState_Get()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "breakpoint() must be called from the script thread of a running script");
        return NULL;
    }
    if (self->in_callback || self->request == REQUEST_NONE)
        Py_RETURN_NONE;
    /* report the script's frame, not the helper (sleep, wait) that called us */
    PyFrameObject *frame = find_eligible_frame(self);
    if (frame == NULL) {
        frame = PyEval_GetFrame();
        if (frame == NULL)
            Py_RETURN_NONE;
        Py_INCREF(frame);
    }
    int err = self->request == REQUEST_STOP ? do_stop(self, frame) : do_break(self, frame);
    Py_DECREF(frame);
    if (err < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Controller_stop(Controller *self, PyObject *args)
{
    PyObject *arg = Py_None;
    if (!PyArg_ParseTuple(args, "|O:stop", &arg))
        return NULL;
    if (self->tstate == NULL || self->tstate != PyThreadState_Get()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "stop() must be called from the script thread; use set_stop() elsewhere");
        return NULL;
    }
    if (!self->insist) {
        Py_CLEAR(self->request_arg);
        self->request = REQUEST_NONE;
    }
    /* watch for the script swallowing the ControlStop, as after do_stop */
    if (install_trace(self) < 0)
        return NULL;
    PyFrameObject *frame = find_eligible_frame(self);
    if (frame != NULL) {
        self->last_lineno = PyFrame_GetLineNumber(frame);
        Py_DECREF(frame);
    }
    raise_stop(self, arg, self->last_lineno);
    return NULL;
}

static PyObject *
Controller_pending(Controller *self, PyObject *unused)
{
    PyObject *arg = self->request_arg ? self->request_arg : Py_None;
    return Py_BuildValue("(iO)", self->request, arg);
}

static PyObject *
Controller_set_ignored_handler(Controller *self, PyObject *handler)
{
    if (handler != Py_None && !PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable or None");
        return NULL;
    }
    Py_XSETREF(self->ignored_handler, handler == Py_None ? NULL : Py_NewRef(handler));
    Py_RETURN_NONE;
}

static PyObject *
Controller_set_observer(Controller *self, PyObject *observer)
{
    if (observer != Py_None && !PyCallable_Check(observer)) {
        PyErr_SetString(PyExc_TypeError, "observer must be callable or None");
        return NULL;
    }
    Py_XSETREF(self->observer, observer == Py_None ? NULL : Py_NewRef(observer));
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------- attributes */

static PyObject *
Controller_get_status(Controller *self, void *closure)
{
    return PyLong_FromLong(self->status);
}

static PyObject *
Controller_get_lineno(Controller *self, void *closure)
{
    PyFrameObject *frame = find_eligible_frame(self);
    if (frame != NULL) {
        self->last_lineno = PyFrame_GetLineNumber(frame);
        Py_DECREF(frame);
    }
    return PyLong_FromLong(self->last_lineno);
}

static PyObject *
Controller_get_currentframe(Controller *self, void *closure)
{
    PyFrameObject *frame = find_eligible_frame(self);
    if (frame == NULL)
        Py_RETURN_NONE;
    return (PyObject *)frame;
}

static PyObject *
Controller_get_toplevelframe(Controller *self, void *closure)
{
    if (self->toplevel == NULL || self->tstate == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(self->toplevel);
}

static PyObject *
Controller_get_lineno_behavior(Controller *self, void *closure)
{
    return PyLong_FromLong(self->lineno_mode);
}

static PyObject *
Controller_get_trace_installed(Controller *self, void *closure)
{
    return PyBool_FromLong(self->trace_installed);
}

static PyObject *
Controller_get_insisting(Controller *self, void *closure)
{
    return PyBool_FromLong(self->insist);
}

/* ------------------------------------------------------------ lifecycle */

static int
Controller_init(Controller *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"breakfunc", "break_only_in_toplevel",
                             "break_only_in_filename", "lineno_behavior", NULL};
    PyObject *breakfunc, *filename = Py_None;
    int toplevel_only = 0, lineno_mode = LINENO_ON_DEMAND;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pOi:Controller", kwlist, &breakfunc,
                                     &toplevel_only, &filename, &lineno_mode))
        return -1;
    if (self->status >= STATUS_RUNNING) {
        PyErr_SetString(PyExc_RuntimeError, "cannot re-initialise a running controller");
        return -1;
    }
    if (!PyCallable_Check(breakfunc)) {
        PyErr_SetString(PyExc_TypeError, "breakfunc must be callable");
        return -1;
    }
    if (filename != Py_None && !PyUnicode_Check(filename)) {
        PyErr_SetString(PyExc_TypeError, "break_only_in_filename must be a str or None");
        return -1;
    }
    if (lineno_mode != LINENO_ON_DEMAND && lineno_mode != LINENO_TRACE_ALL) {
        PyErr_Format(PyExc_ValueError,
                     "lineno_behavior must be LINENO_ON_DEMAND (0) or LINENO_TRACE_ALL (1), not %d",
                     lineno_mode);
        return -1;
    }
    Py_XSETREF(self->breakfunc, Py_NewRef(breakfunc));
    Py_XSETREF(self->filename, filename == Py_None ? NULL : Py_NewRef(filename));
    self->toplevel_only = toplevel_only;
    self->lineno_mode = lineno_mode;
    return 0;
}

static PyObject *
Controller_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Controller *self = (Controller *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->status = STATUS_IDLE;
    self->last_lineno = -1;
    return (PyObject *)self;
}

static int
Controller_traverse(Controller *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->breakfunc);
    Py_VISIT(self->observer);
    Py_VISIT(self->request_arg);
    Py_VISIT(self->base_frame);
    Py_VISIT(self->toplevel);
    Py_VISIT(self->toplevel_code);
    Py_VISIT(self->break_frame);
    Py_VISIT(self->saved_obj);
    Py_VISIT(self->stop_arg);
    Py_VISIT(self->ignored_handler);
    return 0;
}

static int
Controller_clear(Controller *self)
{
    Py_CLEAR(self->breakfunc);
    Py_CLEAR(self->observer);
    Py_CLEAR(self->request_arg);
    Py_CLEAR(self->base_frame);
    Py_CLEAR(self->toplevel);
    Py_CLEAR(self->toplevel_code);
    Py_CLEAR(self->break_frame);
    Py_CLEAR(self->saved_obj);
    Py_CLEAR(self->stop_arg);
    Py_CLEAR(self->ignored_handler);
    return 0;
}

static void
Controller_dealloc(Controller *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Controller_clear(self);
    Py_CLEAR(self->filename);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Controller_methods[] = {
    {"start", (PyCFunction)Controller_start, METH_O,
     "start(callable) -> result\n\nCall callable() in this thread under control. "
     "Exceptions, including ControlStop, propagate to the caller."},
    {"start_exec", (PyCFunction)Controller_start_exec, METH_VARARGS,
     "start_exec(code, globals[, locals])\n\nExecute a code object in this thread under control."},
    {"set_break", (PyCFunction)Controller_set_break, METH_VARARGS,
     "set_break(arg=None)\n\nFrom any thread: call breakfunc(frame, arg) in the script thread "
     "at its next eligible line."},
    {"set_stop", (PyCFunction)(void (*)(void))Controller_set_stop, METH_VARARGS | METH_KEYWORDS,
     "set_stop(arg=None, insist=False)\n\nFrom any thread: raise ControlStop(arg) in the script "
     "at its next eligible line.  A ControlStop the script catches without re-raising is "
     "raised again at the next eligible line.  insist=True keeps the stop armed until the "
     "run ends: ControlStop is raised at every eligible line, also in except and finally "
     "blocks, and pending() keeps reporting it."},
    {"stop", (PyCFunction)Controller_stop, METH_VARARGS,
     "stop(arg=None)\n\nFrom the script thread: raise ControlStop(arg) here and now."},
    {"breakpoint", (PyCFunction)Controller_breakpoint, METH_NOARGS,
     "breakpoint()\n\nFrom the script thread: act on a pending break or stop request here, "
     "whatever the frame."},
    {"pending", (PyCFunction)Controller_pending, METH_NOARGS,
     "pending() -> (request, arg)\n\nThe pending request: REQUEST_NONE, REQUEST_BREAK or "
     "REQUEST_STOP, and its argument."},
    {"set_ignored_handler", (PyCFunction)Controller_set_ignored_handler, METH_O,
     "set_ignored_handler(handler)\n\nhandler(frame, arg) is called in the script thread when "
     "the script caught a ControlStop and went on; the stop is raised again right after it "
     "returns (the handler may arm an insisting stop first).  None removes it."},
    {"set_observer", (PyCFunction)Controller_set_observer, METH_O,
     "set_observer(observer)\n\nobserver(status, lineno) is called in the script thread on "
     "every change of status (None removes it)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Controller_getset[] = {
    {"status", (getter)Controller_get_status, NULL, "execution status (STATUS_*)", NULL},
    {"lineno", (getter)Controller_get_lineno, NULL,
     "line being executed in the eligible frame, or the last one known", NULL},
    {"currentframe", (getter)Controller_get_currentframe, NULL,
     "eligible frame being executed (the break frame while in break), or None", NULL},
    {"toplevelframe", (getter)Controller_get_toplevelframe, NULL,
     "first frame of the running script, or None", NULL},
    {"lineno_behavior", (getter)Controller_get_lineno_behavior, NULL,
     "LINENO_ON_DEMAND or LINENO_TRACE_ALL", NULL},
    {"trace_installed", (getter)Controller_get_trace_installed, NULL,
     "whether the trace function is installed on the script thread now", NULL},
    {"insisting", (getter)Controller_get_insisting, NULL,
     "whether an insisting stop (set_stop(insist=True)) is armed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Controller_slots[] = {
    {Py_tp_doc, "Controller(breakfunc, break_only_in_toplevel=False, "
                "break_only_in_filename=None, lineno_behavior=LINENO_ON_DEMAND)\n\n"
                "Runs code in the calling thread; other threads may break, continue "
                "and stop it."},
    {Py_tp_new, Controller_new},
    {Py_tp_init, Controller_init},
    {Py_tp_dealloc, Controller_dealloc},
    {Py_tp_traverse, Controller_traverse},
    {Py_tp_clear, Controller_clear},
    {Py_tp_methods, Controller_methods},
    {Py_tp_getset, Controller_getset},
    {0, NULL},
};

/* --------------------------------------------------------- other threads */

/* The trace object installed on a thread that stop_thread() stops: it
   raises ControlStop(arg) at the next line of eligible code, again whenever
   that one was swallowed, and with insist at every eligible line.  The
   thread's state owns it (c_traceobj) and drops it when the thread ends, so
   nothing here refers to a thread state after the install. */
typedef struct {
    PyObject_HEAD
    PyObject *arg;
    PyObject *filename;   /* str or NULL: every frame */
    int insist;
    int raised;
    int cancelled;        /* cancel(): restore the displaced tracer at the next event */
    int release_on_entry; /* cancel at the next fresh call into eligible code */
    Py_tracefunc saved_func;  /* the tracer stop_thread() displaced, or NULL */
    PyObject *saved_obj;
} ThreadStop;

static PyTypeObject *ThreadStopType;

static int
thread_stop_trace(PyObject *obj, PyFrameObject *frame, int what, PyObject *unused)
{
    ThreadStop *self = (ThreadStop *)obj;
    if (self->release_on_entry && what == PyTrace_CALL && self->filename != NULL &&
            filename_matches(self->filename, frame)) {
        /* A call into eligible code from outside it (a pool worker taking new
           work): the stop is over.  Calls made while the stopped code still
           unwinds have an eligible frame further out and stay stopped. */
        int fresh = 1;
        PyFrameObject *outer = PyFrame_GetBack(frame);
        while (outer != NULL && fresh) {
            fresh = !filename_matches(self->filename, outer);
            PyFrameObject *next = PyFrame_GetBack(outer);
            Py_DECREF(outer);
            outer = next;
        }
        Py_XDECREF(outer);
        if (PyErr_Occurred())
            return -1;
        if (fresh)
            self->cancelled = 1;  /* a call event is traced once: restore below */
    }
    if (self->cancelled) {
        if (what == PyTrace_LINE) {
            /* ceval calls us again with this same obj pointer for the OPCODE
               event of a frame that traces opcodes: put the tracer back then */
            PyObject *v = PyObject_GetAttrString((PyObject *)frame, "f_trace_opcodes");
            int opcodes = v == NULL ? -1 : PyObject_IsTrue(v);
            Py_XDECREF(v);
            if (opcodes != 0) {
                PyErr_Clear();
                return 0;
            }
        }
        /* The thread state owns the only reference to self as its trace
           object; keep self alive while the previous tracer is put back. */
        Py_INCREF(self);
        int err = _PyEval_SetTrace(PyThreadState_Get(), self->saved_func, self->saved_obj);
        Py_DECREF(self);
        return err;
    }
    if (what != PyTrace_LINE)
        return 0;
    if (self->filename != NULL && !filename_matches(self->filename, frame))
        return 0;
    /* after the first raise, cleanup code runs undisturbed unless insisting */
    if (self->raised && !self->insist && handling_stop(PyThreadState_Get()))
        return 0;
    self->raised = 1;
    PyObject *exc = PyObject_CallOneArg(ControlStop, self->arg);
    if (exc != NULL) {
        PyErr_SetObject(ControlStop, exc);
        Py_DECREF(exc);
    }
    return -1;
}

static int
ThreadStop_traverse(ThreadStop *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->arg);
    Py_VISIT(self->saved_obj);
    return 0;
}

static int
ThreadStop_clear(ThreadStop *self)
{
    Py_CLEAR(self->arg);
    Py_CLEAR(self->saved_obj);
    return 0;
}

static PyObject *
ThreadStop_cancel(ThreadStop *self, PyObject *unused)
{
    /* Only a flag: the tracer can only be changed from the thread itself
       (another thread's state may be running).  Its next trace event puts
       the displaced tracer back. */
    self->cancelled = 1;
    Py_RETURN_NONE;
}

static PyObject *
ThreadStop_release_on_entry(ThreadStop *self, PyObject *unused)
{
    self->release_on_entry = 1;
    Py_RETURN_NONE;
}

static PyObject *
ThreadStop_get_active(ThreadStop *self, void *closure)
{
    return PyBool_FromLong(!self->cancelled);
}

static PyGetSetDef ThreadStop_getset[] = {
    {"active", (getter)ThreadStop_get_active, NULL,
     "False once the stop was cancelled or released (the thread may not know yet)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef ThreadStop_methods[] = {
    {"release_on_entry", (PyCFunction)ThreadStop_release_on_entry, METH_NOARGS,
     "release_on_entry()\n\nEnd the stop (as cancel()) when the thread next calls into "
     "code of the stop's filename from code outside it; until then it stays stopped "
     "(code still unwinding from the stop is not released)."},
    {"cancel", (PyCFunction)ThreadStop_cancel, METH_NOARGS,
     "cancel()\n\nThe stop is over: no more ControlStop; at the thread's next trace "
     "event the tracer that stop_thread() displaced (if any) is put back."},
    {NULL, NULL, 0, NULL},
};

static void
ThreadStop_dealloc(ThreadStop *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    ThreadStop_clear(self);
    Py_CLEAR(self->filename);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot ThreadStop_slots[] = {
    {Py_tp_doc, "Trace object of a thread being stopped by stop_thread()."},
    {Py_tp_dealloc, ThreadStop_dealloc},
    {Py_tp_traverse, ThreadStop_traverse},
    {Py_tp_clear, ThreadStop_clear},
    {Py_tp_methods, ThreadStop_methods},
    {Py_tp_getset, ThreadStop_getset},
    {0, NULL},
};

static PyType_Spec ThreadStop_spec = {
    .name = "pyctl._pyctl.ThreadStop",
    .basicsize = sizeof(ThreadStop),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = ThreadStop_slots,
};

static PyObject *pyctl_stop_thread_locked(PyThreadState *, unsigned long, PyObject *,
                                           PyObject *, int, PyObject *);

static PyObject *
pyctl_stop_thread(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ident", "arg", "filename", "insist", "expect", "interrupt",
                             NULL};
    unsigned long ident;
    PyObject *arg = Py_None, *filename = Py_None, *expect = Py_None;
    int insist = 0, interrupt = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "k|O$OpOp:stop_thread", kwlist,
                                     &ident, &arg, &filename, &insist, &expect, &interrupt))
        return NULL;
    if (expect != Py_None && !PyFrame_Check(expect)) {
        PyErr_SetString(PyExc_TypeError, "expect must be a frame or None");
        return NULL;
    }
    if (filename != Py_None && !PyUnicode_Check(filename)) {
        PyErr_SetString(PyExc_TypeError, "filename must be a str or None");
        return NULL;
    }
    PyThreadState *current = PyThreadState_Get();
    if (ident == current->thread_id) {
        PyErr_SetString(PyExc_ValueError, "stop_thread() cannot stop the calling thread");
        return NULL;
    }
    /* No collection (and so no finalizer or gc callback, which could let
       other threads run) while we hold the raw thread state pointer. */
    int gc_was_enabled = PyGC_Disable();
    PyObject *res = pyctl_stop_thread_locked(current, ident, arg, filename, insist, expect);
    if (gc_was_enabled)
        PyGC_Enable();
    if (res != NULL && res != Py_False && interrupt)
        PyThreadState_SetAsyncExc(ident, ControlStop);
    return res;
}

static PyObject *
pyctl_stop_thread_locked(PyThreadState *current, unsigned long ident, PyObject *arg,
                         PyObject *filename, int insist, PyObject *expect)
{
    PyThreadState *ts = PyInterpreterState_ThreadHead(current->interp);
    while (ts != NULL && ts->thread_id != ident)
        ts = PyThreadState_Next(ts);
    if (ts == NULL)
        Py_RETURN_FALSE;
    if (expect != Py_None) {
        /* Thread idents are reused at once: is this still the thread whose
           stack held that frame?  (The caller keeps the collector off, so no
           Python code runs and no other thread gets the GIL while we look.) */
        int found = 0;
        PyFrameObject *frame = PyThreadState_GetFrame(ts);
        while (frame != NULL && !found) {
            found = (PyObject *)frame == expect;
            PyFrameObject *back = PyFrame_GetBack(frame);
            Py_DECREF(frame);
            frame = back;
        }
        Py_XDECREF(frame);
        if (PyErr_Occurred())   /* no memory for a frame object */
            return NULL;
        if (!found)
            Py_RETURN_FALSE;
    }
    ThreadStop *stopper = PyObject_GC_New(ThreadStop, ThreadStopType);
    if (stopper == NULL)
        return NULL;
    stopper->arg = Py_NewRef(arg);
    stopper->filename = filename == Py_None ? NULL : Py_NewRef(filename);
    stopper->insist = insist;
    stopper->raised = 0;
    stopper->cancelled = 0;
    stopper->release_on_entry = 0;
    if (ts->c_tracefunc == thread_stop_trace) {
        /* stopped again (more firmly): keep what the first stop displaced */
        ThreadStop *earlier = (ThreadStop *)ts->c_traceobj;
        stopper->saved_func = earlier->saved_func;
        stopper->saved_obj = Py_XNewRef(earlier->saved_obj);
    }
    else {
        stopper->saved_func = ts->c_tracefunc;
        stopper->saved_obj = Py_XNewRef(ts->c_traceobj);
    }
    PyObject_GC_Track(stopper);
    int err = _PyEval_SetTrace(ts, thread_stop_trace, (PyObject *)stopper);
    if (err < 0) {
        Py_DECREF(stopper);
        return NULL;
    }
    /* interrupt also reaches code outside the eligible frames (a library
       loop called from the script), once, as soon as the thread runs Python
       bytecode again: anywhere, even between a lock's acquire() and its
       try, so only for emergencies */
    return (PyObject *)stopper;  /* the caller's handle for cancel() */
}

static PyMethodDef module_methods[] = {
    {"stop_thread", (PyCFunction)(void (*)(void))pyctl_stop_thread, METH_VARARGS | METH_KEYWORDS,
     "stop_thread(ident, arg=None, *, filename=None, insist=False, expect=None, "
     "interrupt=False)"
     " -> ThreadStop | False\n\n"
     "Stop another thread (not one running a Controller's script): ControlStop(arg) is "
     "raised at its next line of code from the file filename (any code if None), and "
     "again whenever it was caught and not re-raised.  insist=True raises it at every "
     "such line, also in except and finally blocks.  interrupt=True also raises it once "
     "wherever the thread runs Python next, as an asynchronous exception (library code "
     "too: may leave a lock acquired without try/finally held; for emergencies).  A "
     "thread blocked in C is reached when the call returns.  Returns "
     "False if no thread has that ident (threading.get_ident() / Thread.ident), or, with "
     "expect (a frame), if that frame is not on the thread's stack (idents are reused: "
     "pass the outermost frame seen when the thread was picked).  Otherwise the "
     "ThreadStop handle: its cancel() ends the stop and puts back the tracer it "
     "displaced."},
    {NULL, NULL, 0, NULL},
};

static PyType_Spec Controller_spec = {
    .name = "pyctl._pyctl.Controller",
    .basicsize = sizeof(Controller),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Controller_slots,
};

static int
module_exec(PyObject *module)
{
    if (ControlStop == NULL)
        ControlStop = PyErr_NewExceptionWithDoc(
        "pyctl.ControlStop",
        "Raised in a script to stop it. Derives from BaseException so that "
        "'except Exception:' does not swallow it.",
        PyExc_BaseException, NULL);
    if (ControlStop == NULL || PyModule_AddObjectRef(module, "ControlStop", ControlStop) < 0)
        return -1;
    if (ThreadStopType == NULL)
        ThreadStopType = (PyTypeObject *)PyType_FromSpec(&ThreadStop_spec);
    if (ThreadStopType == NULL)
        return -1;
    PyObject *type = PyType_FromModuleAndSpec(module, &Controller_spec, NULL);
    if (type == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "Controller", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    Py_DECREF(type);
#define ADD_INT(name) if (PyModule_AddIntConstant(module, #name, name) < 0) return -1
    ADD_INT(STATUS_IDLEEXC);
    ADD_INT(STATUS_IDLE);
    ADD_INT(STATUS_RUNNING);
    ADD_INT(STATUS_INBREAK);
    ADD_INT(STATUS_STOPPING);
    ADD_INT(REQUEST_NONE);
    ADD_INT(REQUEST_BREAK);
    ADD_INT(REQUEST_STOP);
    ADD_INT(LINENO_ON_DEMAND);
    ADD_INT(LINENO_TRACE_ALL);
#undef ADD_INT
    return 0;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef pyctl_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyctl._pyctl",
    .m_doc = "Script controller: break, continue and stop Python code from another thread.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC
PyInit__pyctl(void)
{
    return PyModuleDef_Init(&pyctl_module);
}

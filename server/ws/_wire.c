/* The per-socket loops' bytes, in C (server/ws/wire.py says what each call means and
 * holds the pure-Python twin the same tests run against; docs/architecture.md, "A native
 * wire module"). Two calls, each made once for many sockets:
 *
 *   send_each(fds, frames): one non-blocking send per socket, the GIL released over the
 *     whole loop; reports only the frames not written whole.
 *   read_ready(epoll, modes, limit): one epoll_wait and one recv per ready socket, the GIL
 *     released over them; then, for a socket whose mode says its reader stands at a frame
 *     boundary, the leading frames that are plain moves are unmasked and decoded here, and
 *     everything from the first frame that is not one is handed back as bytes.
 *
 * It does bytes, never decisions: a frame it is unsure of (any other message, a move with
 * another key, a number out of range, a fragment, a frame split across reads) goes back
 * to Python whole, where the codec and the Conversation judge it as they judge any.
 * Linux only, like the hub it serves. Built by setup.py with gcc and the Python headers. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define MAX_EVENTS 1024
#define RECV_BYTES 65536           /* at most, per socket and wakeup (the hub's epoll is
                                      level-triggered: the rest comes at the next one) */
#define READ_BUFFER (4 * 1024 * 1024)
#define TEXT 0x1
#define BINARY 0x2
#define MODE_V1 1                  /* modes[fd]: 0 hand back bytes; 1 JSON moves in text */
#define MODE_V2 2                  /* frames; 2 MessagePack moves in binary frames */
#define MAX_MOVE 125               /* payload bytes: a move is ~40; longer goes to Python */

/* ---- send_each --------------------------------------------------------------------- */

typedef struct {
    int fd;
    const char *data;
    Py_ssize_t len;
    Py_ssize_t sent;
} Job;

static PyObject *send_each(PyObject *self, PyObject *args) {
    PyObject *fds, *frames;
    if (!PyArg_ParseTuple(args, "O!O!:send_each", &PyList_Type, &fds, &PyList_Type, &frames))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(fds);
    if (PyList_GET_SIZE(frames) != n) {
        PyErr_SetString(PyExc_ValueError, "send_each: as many frames as sockets");
        return NULL;
    }
    Job *jobs = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Job));
    if (jobs == NULL)
        return PyErr_NoMemory();
    /* The frames are held for the loop: it runs without the GIL. */
    PyObject **held = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(PyObject *));
    if (held == NULL) {
        PyMem_Free(jobs);
        return PyErr_NoMemory();
    }
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(frames, i);
        long fd = PyLong_AsLong(PyList_GET_ITEM(fds, i));
        if ((fd == -1 && PyErr_Occurred()) || !PyBytes_Check(frame)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "send_each: frames are bytes");
            for (Py_ssize_t j = 0; j < i; j++)
                Py_DECREF(held[j]);
            PyMem_Free(jobs);
            PyMem_Free(held);
            return NULL;
        }
        Py_INCREF(frame);
        held[i] = frame;
        jobs[i].fd = fd < 0 || fd > INT32_MAX ? -1 : (int)fd;
        jobs[i].data = PyBytes_AS_STRING(frame);
        jobs[i].len = PyBytes_GET_SIZE(frame);
    }
    Py_BEGIN_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        Job *job = &jobs[i];
        if (job->fd < 0) {
            job->sent = -1;
            continue;
        }
        ssize_t sent = send(job->fd, job->data, (size_t)job->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0)
            sent = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
        job->sent = sent;
    }
    Py_END_ALLOW_THREADS
    long long total = 0;
    PyObject *short_ = PyList_New(0);
    for (i = 0; i < n; i++) {
        Py_DECREF(held[i]);
        if (jobs[i].sent > 0)
            total += jobs[i].sent;
        if (short_ != NULL && jobs[i].sent < jobs[i].len) {
            PyObject *item = Py_BuildValue("(nn)", i, jobs[i].sent);
            if (item == NULL || PyList_Append(short_, item) < 0)
                Py_CLEAR(short_);
            Py_XDECREF(item);
        }
    }
    PyMem_Free(jobs);
    PyMem_Free(held);
    if (short_ == NULL)
        return NULL;
    return Py_BuildValue("(LN)", total, short_);
}

/* ---- decoding a move ----------------------------------------------------------------- */

typedef struct {
    long long seq;
    double dx, dy;
} Move;

enum { KEY_TYPE = 1, KEY_SEQ = 2, KEY_DX = 4, KEY_DY = 8, ALL_KEYS = 15 };

static int key_of(const unsigned char *name, size_t len) {
    if (len == 4 && memcmp(name, "type", 4) == 0) return KEY_TYPE;
    if (len == 3 && memcmp(name, "seq", 3) == 0) return KEY_SEQ;
    if (len == 2 && memcmp(name, "dx", 2) == 0) return KEY_DX;
    if (len == 2 && memcmp(name, "dy", 2) == 0) return KEY_DY;
    return 0;
}

static int usable(double value, double limit) {
    return isfinite(value) && value >= -limit && value <= limit;
}

/* MessagePack: an integer of 64 bits (signed or not, as msgspec reads it). */
static int mp_int(const unsigned char *p, size_t n, size_t *at, long long *out) {
    size_t i = *at;
    if (i >= n) return 0;
    unsigned char t = p[i];
    size_t width;
    int is_signed;
    if (t <= 0x7f) { *out = t; *at = i + 1; return 1; }
    if (t >= 0xe0) { *out = (long long)(signed char)t; *at = i + 1; return 1; }
    switch (t) {
    case 0xcc: width = 1; is_signed = 0; break;
    case 0xcd: width = 2; is_signed = 0; break;
    case 0xce: width = 4; is_signed = 0; break;
    case 0xcf: width = 8; is_signed = 0; break;
    case 0xd0: width = 1; is_signed = 1; break;
    case 0xd1: width = 2; is_signed = 1; break;
    case 0xd2: width = 4; is_signed = 1; break;
    case 0xd3: width = 8; is_signed = 1; break;
    default: return 0;
    }
    if (n - i - 1 < width) return 0;
    uint64_t v = 0;
    for (size_t k = 0; k < width; k++)
        v = (v << 8) | p[i + 1 + k];
    if (is_signed) {
        int shift = (int)(64 - 8 * width);
        *out = (long long)(v << shift) >> shift;  /* sign-extend */
    } else {
        if (v > (uint64_t)INT64_MAX) return 0;  /* msgspec refuses it: Python says why */
        *out = (long long)v;
    }
    *at = i + 1 + width;
    return 1;
}

static int mp_number(const unsigned char *p, size_t n, size_t *at, double *out) {
    size_t i = *at;
    if (i >= n) return 0;
    if (p[i] == 0xca && n - i >= 5) {
        uint32_t bits = ((uint32_t)p[i + 1] << 24) | ((uint32_t)p[i + 2] << 16)
                        | ((uint32_t)p[i + 3] << 8) | p[i + 4];
        float f;
        memcpy(&f, &bits, 4);
        *out = f;
        *at = i + 5;
        return 1;
    }
    if (p[i] == 0xcb && n - i >= 9) {
        uint64_t bits = 0;
        for (int k = 1; k <= 8; k++)
            bits = (bits << 8) | p[i + k];
        memcpy(out, &bits, 8);
        *at = i + 9;
        return 1;
    }
    long long whole;
    if (!mp_int(p, n, at, &whole)) return 0;
    *out = (double)whole;
    return 1;
}

/* A fixmap of exactly type "move", seq, dx and dy, in any order, and nothing after. */
static int msgpack_move(const unsigned char *p, size_t n, double limit, Move *move) {
    if (n < 1 || p[0] != 0x84) return 0;
    size_t at = 1;
    int seen = 0;
    for (int k = 0; k < 4; k++) {
        if (at >= n || (p[at] & 0xe0) != 0xa0) return 0;
        size_t len = p[at] & 0x1f;
        if (n - at - 1 < len) return 0;
        int key = key_of(p + at + 1, len);
        if (key == 0 || (seen & key)) return 0;
        seen |= key;
        at += 1 + len;
        switch (key) {
        case KEY_TYPE:
            if (n - at < 5 || memcmp(p + at, "\xa4move", 5) != 0) return 0;
            at += 5;
            break;
        case KEY_SEQ:
            if (!mp_int(p, n, &at, &move->seq) || move->seq < 0) return 0;
            break;
        default: {
            double value;
            if (!mp_number(p, n, &at, &value) || !usable(value, limit)) return 0;
            if (key == KEY_DX) move->dx = value; else move->dy = value;
        }
        }
    }
    return seen == ALL_KEYS && at == n;
}

/* JSON: whitespace as RFC 8259 has it. */
static size_t js_space(const unsigned char *p, size_t n, size_t at) {
    while (at < n && (p[at] == ' ' || p[at] == '\t' || p[at] == '\n' || p[at] == '\r'))
        at++;
    return at;
}

/* A JSON number's extent (RFC 8259 grammar); *integral tells an integer literal. */
static size_t js_number_end(const unsigned char *p, size_t n, size_t at, int *integral) {
    size_t i = at;
    *integral = 1;
    if (i < n && p[i] == '-') i++;
    if (i >= n) return 0;
    if (p[i] == '0') i++;
    else if (p[i] >= '1' && p[i] <= '9') { while (i < n && p[i] >= '0' && p[i] <= '9') i++; }
    else return 0;
    if (i < n && p[i] == '.') {
        *integral = 0;
        i++;
        if (i >= n || p[i] < '0' || p[i] > '9') return 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        *integral = 0;
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-')) i++;
        if (i >= n || p[i] < '0' || p[i] > '9') return 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++;
    }
    return i;
}

static int js_value(const unsigned char *p, size_t n, size_t *at, int key, double limit,
                    Move *move) {
    size_t i = *at;
    if (key == KEY_TYPE) {
        if (n - i < 6 || memcmp(p + i, "\"move\"", 6) != 0) return 0;
        *at = i + 6;
        return 1;
    }
    int integral;
    size_t end = js_number_end(p, n, i, &integral);
    if (end == 0) return 0;
    size_t len = end - i;
    if (key == KEY_SEQ) {  /* a non-negative integer of 64 bits */
        if (!integral || p[i] == '-' || len > 19) return 0;
        uint64_t v = 0;
        for (size_t k = i; k < end; k++)
            v = v * 10 + (uint64_t)(p[k] - '0');  /* 19 digits: no wrap */
        if (v > (uint64_t)INT64_MAX) return 0;  /* msgspec refuses it: Python says why */
        move->seq = (long long)v;
    } else {
        char text[48];
        double value;
        if (integral) {  /* an int to Python, then float(int): rounded alike, and -0 is 0 */
            if (len > 16) return 0;  /* past 64 bits msgspec refuses it: Python says why */
            long long v = 0;
            for (size_t k = p[i] == '-' ? i + 1 : i; k < end; k++)
                v = v * 10 + (p[k] - '0');
            value = (double)(p[i] == '-' ? -v : v);
        } else {
            if (len >= sizeof text) return 0;
            memcpy(text, p + i, len);
            text[len] = '\0';
            /* Correctly rounded and independent of the locale, like msgspec's. */
            value = PyOS_string_to_double(text, NULL, NULL);
            if (value == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
        }
        if (!usable(value, limit)) return 0;
        if (key == KEY_DX) move->dx = value; else move->dy = value;
    }
    *at = end;
    return 1;
}

/* An object of exactly "type": "move", "seq", "dx" and "dy", in any order, plain ASCII
 * keys (an escape or anything unusual goes to Python). */
static int json_move(const unsigned char *p, size_t n, double limit, Move *move) {
    size_t at = js_space(p, n, 0);
    if (at >= n || p[at] != '{') return 0;
    int seen = 0;
    for (int k = 0; k < 4; k++) {
        at = js_space(p, n, at + 1);
        if (at >= n || p[at] != '"') return 0;
        size_t start = ++at;
        while (at < n && p[at] != '"') {
            if (p[at] < 0x20 || p[at] >= 0x80 || p[at] == '\\') return 0;
            at++;
        }
        if (at >= n) return 0;
        int key = key_of(p + start, at - start);
        if (key == 0 || (seen & key)) return 0;
        seen |= key;
        at = js_space(p, n, at + 1);
        if (at >= n || p[at] != ':') return 0;
        at = js_space(p, n, at + 1);
        if (!js_value(p, n, &at, key, limit, move)) return 0;
        at = js_space(p, n, at);
        if (at >= n || p[at] != (k == 3 ? '}' : ',')) return 0;
    }
    return seen == ALL_KEYS && js_space(p, n, at + 1) == n;
}

/* ---- read_ready ---------------------------------------------------------------------- */

typedef struct {
    int fd;
    Py_ssize_t at;      /* where its bytes begin in the buffer */
    Py_ssize_t got;     /* recv's answer: bytes, 0 at EOF, -1 broken, -2 nothing there */
} Read;

static unsigned char *read_buffer;

/* The leading plain moves of one socket's bytes, as (seq, dx, dy) tuples (NULL with an
 * exception set if Python failed us); *used says how many bytes they took. */
static PyObject *leading_moves(const unsigned char *p, Py_ssize_t n, int mode, double limit,
                               Py_ssize_t *used) {
    PyObject *moves = NULL;
    unsigned char opcode = mode == MODE_V1 ? TEXT : BINARY;
    unsigned char payload[MAX_MOVE];
    Py_ssize_t at = 0;
    *used = 0;
    while (n - at >= 6) {
        if (p[at] != (0x80 | opcode) || !(p[at + 1] & 0x80))
            break;  /* not final, reserved bits, another opcode, or unmasked */
        size_t len = p[at + 1] & 0x7f;
        if (len > MAX_MOVE || (size_t)(n - at - 6) < len)
            break;
        const unsigned char *mask = p + at + 2, *body = p + at + 6;
        for (size_t k = 0; k < len; k++)
            payload[k] = body[k] ^ mask[k & 3];
        Move move;
        int ok = mode == MODE_V1 ? json_move(payload, len, limit, &move)
                                 : msgpack_move(payload, len, limit, &move);
        if (!ok)
            break;
        if (moves == NULL && (moves = PyList_New(0)) == NULL)
            return NULL;
        PyObject *item = Py_BuildValue("(Ldd)", move.seq, move.dx, move.dy);
        if (item == NULL || PyList_Append(moves, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(moves);
            return NULL;
        }
        Py_DECREF(item);
        at += 6 + (Py_ssize_t)len;
    }
    *used = at;
    if (moves == NULL)
        Py_RETURN_NONE;
    return moves;
}

static PyObject *read_ready(PyObject *self, PyObject *args) {
    PyObject *epoll;
    Py_buffer modes;
    double limit;
    if (!PyArg_ParseTuple(args, "Oy*d:read_ready", &epoll, &modes, &limit))
        return NULL;
    int epfd = PyObject_AsFileDescriptor(epoll);
    if (epfd < 0) {
        PyBuffer_Release(&modes);
        return NULL;
    }
    if (read_buffer == NULL && (read_buffer = PyMem_RawMalloc(READ_BUFFER)) == NULL) {
        PyBuffer_Release(&modes);
        return PyErr_NoMemory();
    }
    struct epoll_event events[MAX_EVENTS];
    Read reads[MAX_EVENTS];
    int ready, count = 0, failed = 0;
    Py_BEGIN_ALLOW_THREADS
    ready = epoll_wait(epfd, events, MAX_EVENTS, 0);
    if (ready < 0)
        failed = errno;
    Py_ssize_t used = 0;
    for (int i = 0; i < ready && READ_BUFFER - used >= RECV_BYTES; i++) {
        Read *r = &reads[count++];
        r->fd = events[i].data.fd;
        r->at = used;
        ssize_t got = recv(r->fd, read_buffer + used, RECV_BYTES, MSG_DONTWAIT);
        if (got < 0)
            got = (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? -2 : -1;
        r->got = got;
        if (got > 0)
            used += got;
    }
    Py_END_ALLOW_THREADS
    if (failed && failed != EINTR) {
        PyBuffer_Release(&modes);
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    const unsigned char *mode_of = modes.buf;
    PyObject *out = PyList_New(0);
    for (int i = 0; out != NULL && i < count; i++) {
        Read *r = &reads[i];
        PyObject *item;
        if (r->got == -2)
            continue;
        if (r->got <= 0) {  /* the peer is gone (EOF), or the socket is broken */
            item = Py_BuildValue("(iOO)", r->fd, Py_None, Py_None);
        } else {
            const unsigned char *p = read_buffer + r->at;
            int mode = r->fd < modes.len ? mode_of[r->fd] : 0;
            Py_ssize_t taken = 0;
            PyObject *moves = mode == MODE_V1 || mode == MODE_V2
                ? leading_moves(p, r->got, mode, limit, &taken) : (Py_INCREF(Py_None), Py_None);
            if (moves == NULL) {
                Py_CLEAR(out);
                break;
            }
            item = Py_BuildValue("(iNy#)", r->fd, moves, (const char *)p + taken,
                                 r->got - taken);
        }
        if (item == NULL || PyList_Append(out, item) < 0)
            Py_CLEAR(out);
        Py_XDECREF(item);
    }
    PyBuffer_Release(&modes);
    return out;
}

static PyMethodDef methods[] = {
    {"send_each", send_each, METH_VARARGS,
     "send_each(fds, frames) -> (bytes sent, [(index, sent) of frames not sent whole])"},
    {"read_ready", read_ready, METH_VARARGS,
     "read_ready(epoll, modes, limit) -> [(fd, leading moves or None, the rest or None)]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wire", "The per-socket loops' bytes, in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__wire(void) {
    return PyModule_Create(&module);
}

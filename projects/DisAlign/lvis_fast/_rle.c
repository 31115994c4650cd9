/*
 * Compressed-RLE masks for fast_lvis: a call decodes masks' strings into their areas and, when
 * asked, their runs; the IoU of given (detection, ground truth) pairs is then read off the runs.
 *
 * pycocotools offers the same numbers only as separate calls that each decode the strings again
 * (area, then iou) and compute the IoUs of every (detection, ground truth) combination of a call.
 * The formulas below are pycocotools' (maskApi.c: rleFrString, rleArea, rleIou without crowd), in
 * the same unsigned 32-bit arithmetic, so that areas and IoUs are bit for bit the same.
 *
 * A mask is a compressed RLE string ("size" [h, w], column-major runs, background first): each run
 * length is a little-endian sequence of 6-bit digits (character - 48; bit 0x20 says another digit
 * follows, bit 0x10 of the last one is the sign), from the fourth run on a difference to the run
 * two before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* the columns of decode's info array */
enum { AREA, FIRST, LAST, RUNS_START, RUNS_END, PIXELS, INFO_COLUMNS };

static int check_size(Py_buffer *b, Py_ssize_t size, const char *name) {
  if (b->len != size) {
    PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, not %zd", name, b->len, size);
    return -1;
  }
  return 0;
}

/* counts[j]'s characters (a str's UTF-8, as pycocotools encodes it, or bytes); -1: TypeError */
static int string_of(PyObject *counts, Py_ssize_t j, const char **s, Py_ssize_t *length) {
  PyObject *item = PyList_GET_ITEM(counts, j);
  if (PyUnicode_Check(item)) {
    *s = PyUnicode_AsUTF8AndSize(item, length);
    return *s ? 0 : -1;
  }
  if (PyBytes_Check(item)) return PyBytes_AsStringAndSize(item, (char **)s, length);
  PyErr_Format(PyExc_TypeError, "counts[%zd] is a %s, not a string or bytes", j,
               Py_TYPE(item)->tp_name);
  return -1;
}

PyDoc_STRVAR(decode_doc,
"decode(counts, info, keep_runs) -> bytearray\n\n"
"Decodes N compressed RLE strings.\n\n"
"Args:\n"
"    counts (list of N str or bytes): the masks' \"counts\".\n"
"    info (int64[N, 6], written): per mask: area (pycocotools' uint32 sum of the foreground\n"
"        runs), first and last foreground pixel (column-major index; -1 and -2 without one),\n"
"        where its runs start and end in the runs returned, the pixels its runs cover (height x\n"
"        width in a well-formed mask).\n"
"    keep_runs (bool): whether to return the runs (else none: areas only).\n"
"Returns:\n"
"    bytearray: the masks' run lengths (uint32), one mask after the other.\n");

static PyObject *decode(PyObject *self, PyObject *args) {
  PyObject *counts, *runs = NULL;
  Py_buffer info;
  int keep;
  if (!PyArg_ParseTuple(args, "O!w*p", &PyList_Type, &counts, &info, &keep)) return NULL;
  Py_ssize_t n = PyList_GET_SIZE(counts), length, capacity = 0;
  const char *s, *stop;
  int64_t *out = info.buf, written = 0;
  if (check_size(&info, n * 8 * INFO_COLUMNS, "info")) goto fail;
  for (Py_ssize_t j = 0; j < n && keep; j++) {  /* a run takes a character or more */
    if (string_of(counts, j, &s, &length)) goto fail;
    capacity += length;
  }
  runs = PyByteArray_FromStringAndSize(NULL, capacity * (Py_ssize_t)sizeof(uint32_t));
  if (!runs) goto fail;
  uint32_t *cnts = (uint32_t *)PyByteArray_AS_STRING(runs);
  for (Py_ssize_t j = 0; j < n; j++) {
    if (string_of(counts, j, &s, &length)) goto fail;
    stop = s + length;
    uint32_t two_before = 0, one_before = 0, area = 0;
    uint64_t position = 0;
    int64_t first = -1, last = -2, m = 0;
    while (s < stop) {
      uint64_t x = 0; /* pycocotools' long; the low 32 bits are the same */
      int k = 0, more = 1;
      while (more && s < stop) {  /* a run's digits; a string cut short ends the run */
        char c = (char)(*s - 48);
        if (5 * k < 64) x |= (uint64_t)(c & 0x1f) << 5 * k;
        more = c & 0x20;
        s++;
        k++;
        if (!more && (c & 0x10) && 5 * k < 64) x |= ~(uint64_t)0 << 5 * k;  /* negative */
      }
      if (m > 2) x += two_before;
      uint32_t count = (uint32_t)x;
      if (keep) cnts[written + m] = count;
      if ((m & 1) && count) {  /* a foreground run */
        area += count;
        if (first < 0) first = (int64_t)position;
        last = (int64_t)(position + count - 1);
      }
      position += count;
      two_before = one_before;
      one_before = count;
      m++;
    }
    out[INFO_COLUMNS * j + AREA] = area;
    out[INFO_COLUMNS * j + FIRST] = first;
    out[INFO_COLUMNS * j + LAST] = last;
    out[INFO_COLUMNS * j + RUNS_START] = written;
    if (keep) written += m;
    out[INFO_COLUMNS * j + RUNS_END] = written;
    out[INFO_COLUMNS * j + PIXELS] = (int64_t)position;
  }
  if (PyByteArray_Resize(runs, written * (Py_ssize_t)sizeof(uint32_t))) goto fail;
  PyBuffer_Release(&info);
  return runs;
fail:
  Py_XDECREF(runs);
  PyBuffer_Release(&info);
  return NULL;
}

PyDoc_STRVAR(pair_iou_doc,
"pair_iou(a_runs, a_info, b_runs, b_info, pair_a, pair_b, iou)\n\n"
"The IoU of P pairs of masks (of the same size) decoded by decode, as pycocotools' iou gives it\n"
"(not crowd): 0 where they do not intersect.\n\n"
"Args:\n"
"    a_runs (uint32), a_info (int64[Na, 6]): the first masks, decoded with their runs (rows\n"
"        may be picked).\n"
"    b_runs (uint32), b_info (int64[Nb, 6]): the second masks, likewise.\n"
"    pair_a, pair_b (int64[P]): the masks of each pair.\n"
"    iou (float64[P], written).\n");

static PyObject *pair_iou(PyObject *self, PyObject *args) {
  Py_buffer a_runs, a_info, b_runs, b_info, pair_a, pair_b, iou;
  if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*w*", &a_runs, &a_info, &b_runs, &b_info, &pair_a,
                        &pair_b, &iou))
    return NULL;
  PyObject *result = NULL;
  Py_ssize_t p = iou.len / (Py_ssize_t)sizeof(double);
  int64_t na = a_info.len / (8 * INFO_COLUMNS), nb = b_info.len / (8 * INFO_COLUMNS);
  const int64_t *ia = a_info.buf, *ib = b_info.buf, *pa = pair_a.buf, *pb = pair_b.buf;
  const uint32_t *ra = a_runs.buf, *rb = b_runs.buf;
  double *o = iou.buf;
  if (check_size(&iou, p * 8, "iou") || check_size(&pair_a, p * 8, "pair_a") ||
      check_size(&pair_b, p * 8, "pair_b"))
    goto done;
  for (Py_ssize_t q = 0; q < p; q++) {
    int64_t d = pa[q], g = pb[q];
    if (d < 0 || d >= na || g < 0 || g >= nb) {
      PyErr_Format(PyExc_IndexError, "pair %zd: mask (%lld, %lld) out of range", q,
                   (long long)d, (long long)g);
      goto done;
    }
    const int64_t *x = ia + INFO_COLUMNS * d, *y = ib + INFO_COLUMNS * g;
    if (x[LAST] < y[FIRST] || y[LAST] < x[FIRST]) {  /* no pixel in common (or an empty mask) */
      o[q] = 0;
      continue;
    }
    int64_t a0 = x[RUNS_START], b0 = y[RUNS_START];
    int64_t ka = x[RUNS_END] - a0, kb = y[RUNS_END] - b0;
    if (ka < 2 || kb < 2 || a0 < 0 || b0 < 0 || x[RUNS_END] * 4 > a_runs.len ||
        y[RUNS_END] * 4 > b_runs.len) {
      PyErr_Format(PyExc_ValueError, "pair %zd: masks (%lld, %lld) without their runs", q,
                   (long long)d, (long long)g);
      goto done;
    }
    const uint32_t *A = ra + a0, *B = rb + b0;
    uint32_t c, ca = A[0], cb = B[0], ct = 1, i = 0, u = 0;
    int va = 0, vb = 0;
    int64_t a = 1, b = 1;
    while (ct > 0) {  /* both masks' runs walked together: intersection and union */
      c = ca < cb ? ca : cb;
      if (!c && ((!ca && a == ka) || (!cb && b == kb))) break; /* one mask's runs cover fewer
          pixels (malformed): pycocotools would loop forever */
      if (va || vb) {
        u += c;
        if (va && vb) i += c;
      }
      ct = 0;
      ca -= c;
      if (!ca && a < ka) {
        ca = A[a++];
        va = !va;
      }
      ct += ca;
      cb -= c;
      if (!cb && b < kb) {
        cb = B[b++];
        vb = !vb;
      }
      ct += cb;
    }
    if (i == 0) u = 1;
    o[q] = (double)i / (double)u;
  }
  result = Py_None;
  Py_INCREF(result);
done:
  PyBuffer_Release(&a_runs);
  PyBuffer_Release(&a_info);
  PyBuffer_Release(&b_runs);
  PyBuffer_Release(&b_info);
  PyBuffer_Release(&pair_a);
  PyBuffer_Release(&pair_b);
  PyBuffer_Release(&iou);
  return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, decode_doc},
    {"pair_iou", pair_iou, METH_VARARGS, pair_iou_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rle", "Compressed-RLE mask areas and pair IoUs, decoded once.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__rle(void) { return PyModule_Create(&module); }

/*
 * ublk-server: block devices served from user space through ublk, with RAM, null and file
 * targets.
 *
 *   ublk-server add --type ram|null|file [--size S] [--file PATH] [--queues N] [--depth D]
 *                   [--copy buffer|user]
 *   ublk-server list
 *   ublk-server del <id>
 *
 * `add` creates /dev/ublkbN, leaves a server process running in the background and prints
 * "ublk-server: added device N: /dev/ublkbN ...". `list` shows every ublk device with its
 * state, queues and target, and for each queue the server thread, the CPUs it serves and the
 * I/O it has done. `del N` stops the server of device N, which stops and deletes the device.
 * Needs `modprobe ublk_drv`. Sizes take K, M and G suffixes.
 *
 * Targets: ram (memory allocated on first write and freed again by a discard), null (reads
 * return zeros, writes are thrown away: the cost of ublk itself), file (pread/pwrite on a regular
 * file or a block device such as /dev/vdb; --size creates or grows a regular file; a discard
 * punches a hole). Every target accepts discard and write-zeroes requests.
 *
 * How ublk works (Linux >= 6.0):
 *  - /dev/ublk-control takes control commands (add, set parameters, start, stop, delete, get
 *    info), sent as io_uring URING_CMD requests with 128-byte SQEs.
 *  - Adding device N creates the char device /dev/ublkcN. For each hardware queue the server
 *    mmaps from it an array of I/O descriptors (one per tag: operation, sector, length) and,
 *    for each tag, submits a FETCH_REQ URING_CMD that stays pending until the kernel has a
 *    request for that tag. A queue belongs to the thread that issued its fetches.
 *  - START_DEV creates the block device /dev/ublkbN. When a block request arrives, the
 *    pending command of its tag completes; the server reads the descriptor, does the I/O
 *    against its target and sends COMMIT_AND_FETCH_REQ with the result, which completes the
 *    block request and waits for the next one in the same step.
 *  - Data moves in one of two ways (--copy). "buffer" (the default, Linux 6.0): the server gives
 *    a per-tag buffer address with each command; the kernel copies write data into it before
 *    completing the fetch, and copies read data out of it when the server commits. "user"
 *    (UBLK_F_USER_COPY, Linux 6.5): the commands carry no address; the server itself copies
 *    with pread()/pwrite() on /dev/ublkcN at an offset that encodes queue, tag and position.
 *  - If the server dies, the kernel fails the requests in flight and removes /dev/ublkbN;
 *    /dev/ublkcN and the id stay until `del` sends DEL_DEV.
 *
 * The server locks its memory (mlockall): it must be able to complete a write without the
 * kernel having to write something out first, possibly to this very device.
 *
 * The server state the kernel does not know (target, per-queue counters) lives in a small
 * shared file, /run/ublk-server/<id>.state, which the server maps and `list` reads.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/fs.h>
#include <linux/ublk_cmd.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Debian 12's uapi header (Linux 6.1) predates the ioctl-encoded opcodes; they are what the
 * kernel prefers (the bare numbers are the "legacy" opcodes). */
#ifndef UBLK_U_CMD_ADD_DEV
#define UBLK_U_CMD_GET_QUEUE_AFFINITY _IOR('u', UBLK_CMD_GET_QUEUE_AFFINITY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_DEV_INFO   _IOR('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV        _IOWR('u', UBLK_CMD_ADD_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV        _IOWR('u', UBLK_CMD_DEL_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_DEV      _IOWR('u', UBLK_CMD_START_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV       _IOWR('u', UBLK_CMD_STOP_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS     _IOWR('u', UBLK_CMD_SET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_IO_FETCH_REQ       _IOWR('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ _IOWR('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd)
#endif
#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE (1ULL << 6)
#endif
/* User copy (Linux 6.5): the buffer of (queue, tag) is a window of /dev/ublkcN. */
#ifndef UBLK_F_USER_COPY
#define UBLK_F_USER_COPY (1ULL << 7)
#define UBLK_IO_BUF_BITS 25
#define UBLK_TAG_OFF UBLK_IO_BUF_BITS
#define UBLK_TAG_BITS 16
#define UBLK_QID_OFF (UBLK_TAG_OFF + UBLK_TAG_BITS)
#endif

#define SECTOR_SHIFT 9
#define IO_BUF_BYTES (64 * 1024) /* largest request; one buffer per tag */
#define MAX_QUEUES 8             /* plenty for a lab VM; the kernel allows 4096 */
#define STATE_DIR "/run/ublk-server"
#define LOG_FILE "/var/log/ublk-server.log"
#define CHAR_CLASS "/sys/class/ublk-char" /* one ublkcN entry per device */

enum target_type { TARGET_RAM, TARGET_NULL, TARGET_FILE };
static const char *const target_names[] = { "ram", "null", "file" };
enum copy_mode { COPY_BUFFER, COPY_USER };
static const char *const copy_names[] = { "buffer", "user" };

/* Counters of one queue; only its thread writes them, `list` reads them. */
struct queue_stats {
	int32_t tid;
	uint32_t pad;
	uint64_t reads, writes, flushes, discards, errors, bytes_read, bytes_written;
};

/* The shared state file: what `list` shows beyond the kernel's GET_DEV_INFO. */
struct shared_state {
	char target[8];
	char file[240];
	uint64_t size;
	_Atomic uint64_t allocated; /* ram target: bytes of memory it holds now */
	uint32_t nr_queues, depth;
	struct queue_stats queue[MAX_QUEUES];
};

struct target {
	enum target_type type;
	uint64_t size;
	const char *path;
	int fd; /* the file, or the ram target's memfd */
};

struct control {
	int fd;              /* /dev/ublk-control */
	struct io_uring ring; /* 128-byte SQEs: control commands carry 32 bytes */
};

struct device;

struct queue {
	struct device *dev;
	unsigned int id;
	const struct ublksrv_io_desc *descs; /* shared with the kernel, one per tag */
	size_t descs_len;
	void **bufs; /* per-tag data buffers */
	struct queue_stats *stats;
	pthread_t thread;
	atomic_int ready; /* 1 once every tag has a FETCH_REQ pending, -1 on error */
};

struct device {
	struct control ctrl;
	int id;
	int cdev_fd; /* /dev/ublkcN */
	unsigned int nr_queues, depth, nr_started;
	enum copy_mode copy;
	struct target tgt;
	struct shared_state *state;
	struct queue queues[MAX_QUEUES];
	atomic_bool stopping;
};

static void fail(const char *what, int err)
{
	fprintf(stderr, "ublk-server: %s: %s\n", what, strerror(err));
	exit(1);
}

/* ------------------------------------------------------------------ control commands */

static int control_open(struct control *c)
{
	int ret;

	c->fd = open("/dev/ublk-control", O_RDWR);
	if (c->fd < 0)
		return -errno;
	ret = io_uring_queue_init(4, &c->ring, IORING_SETUP_SQE128);
	return ret < 0 ? ret : 0;
}

/* Send one control command for device `dev_id` and wait for its result (-errno on failure). */
static int ctrl_cmd(struct control *c, int dev_id, uint32_t op, void *buf, uint16_t len,
		    uint64_t data0)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
	struct ublksrv_ctrl_cmd *cmd = (struct ublksrv_ctrl_cmd *)sqe->cmd;
	struct io_uring_cqe *cqe;
	int ret;

	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = c->fd;
	sqe->cmd_op = op;
	cmd->dev_id = dev_id;
	cmd->queue_id = (uint16_t)-1; /* not a per-queue command */
	cmd->addr = (uintptr_t)buf;
	cmd->len = len;
	cmd->data[0] = data0;
	ret = io_uring_submit_and_wait(&c->ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(&c->ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&c->ring, cqe);
	return ret;
}

/* ------------------------------------------------------------------ targets */

/* Bytes of memory the ram target holds (its memfd's allocated blocks). */
static uint64_t target_allocated(const struct target *t)
{
	struct stat st;

	return t->type == TARGET_RAM && fstat(t->fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

/* Zeros over [off, off + len) by writing them: for targets that cannot punch holes. */
static int write_zeros(int fd, uint64_t off, size_t len)
{
	static const uint8_t zeros[64 * 1024];

	while (len) {
		size_t n = len < sizeof(zeros) ? len : sizeof(zeros);
		ssize_t done = pwrite(fd, zeros, n, off);
		if (done <= 0)
			return done < 0 ? -errno : -EIO;
		off += done;
		len -= done;
	}
	return 0;
}

/* DISCARD and WRITE_ZEROES. `unmap`: the range may be deallocated (a discard always may; a
 * write-zeroes may unless the kernel set UBLK_IO_F_NOUNMAP). Afterwards the range reads as
 * zeros on every target, so a discard never exposes stale data. */
static int target_zero(struct target *t, uint64_t off, size_t len, bool unmap, bool discard)
{
	int mode = unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE;

	if (t->type == TARGET_NULL)
		return 0;
	if (fallocate(t->fd, mode | FALLOC_FL_KEEP_SIZE, off, len) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	/* tmpfs has no ZERO_RANGE, some block devices no hole punching: write the zeros. */
	return discard && t->type == TARGET_FILE ? 0 : write_zeros(t->fd, off, len);
}

/* Do the I/O one descriptor asks for against the target; returns the bytes done or -errno. */
static int target_io(struct target *t, const struct ublksrv_io_desc *iod, void *buf,
		     struct queue_stats *st)
{
	uint64_t off = iod->start_sector << SECTOR_SHIFT;
	size_t len = (size_t)iod->nr_sectors << SECTOR_SHIFT;
	unsigned int op = ublksrv_get_op(iod);
	ssize_t done;
	int ret;

	/* A flush carries no meaningful position; everything else must lie inside the disk. */
	if (op != UBLK_IO_OP_FLUSH && (off > t->size || len > t->size - off))
		return -EIO;
	switch (op) {
	case UBLK_IO_OP_READ:
		st->reads++;
		st->bytes_read += len;
		if (t->type == TARGET_NULL)
			memset(buf, 0, len);
		else if ((done = pread(t->fd, buf, len, off)) != (ssize_t)len)
			return done < 0 ? -errno : -EIO;
		return len;
	case UBLK_IO_OP_WRITE:
		st->writes++;
		st->bytes_written += len;
		if (t->type != TARGET_NULL && (done = pwrite(t->fd, buf, len, off)) != (ssize_t)len)
			return done < 0 ? -errno : -EIO;
		return len;
	case UBLK_IO_OP_FLUSH:
		/* Only the file target has a volatile cache: the host page cache. */
		st->flushes++;
		if (t->type == TARGET_FILE && fdatasync(t->fd) < 0)
			return -errno;
		return 0;
	case UBLK_IO_OP_DISCARD:
	case UBLK_IO_OP_WRITE_ZEROES:
		st->discards++;
		ret = target_zero(t, off, len,
				  op == UBLK_IO_OP_DISCARD || !(iod->op_flags & UBLK_IO_F_NOUNMAP),
				  op == UBLK_IO_OP_DISCARD);
		return ret < 0 ? ret : 0;
	default:
		return -EOPNOTSUPP;
	}
}

/* Open or allocate the target in the foreground, so that mistakes are reported directly. */
static void target_open(struct target *t)
{
	struct stat st;

	if (t->type == TARGET_FILE) {
		if (!t->path)
			fail("--type file needs --file PATH", EINVAL);
		t->fd = open(t->path, O_RDWR | (t->size ? O_CREAT : 0), 0644);
		if (t->fd < 0 || fstat(t->fd, &st) < 0)
			fail(t->path, errno);
		if (S_ISBLK(st.st_mode)) {
			uint64_t bytes;
			if (ioctl(t->fd, BLKGETSIZE64, &bytes) < 0)
				fail(t->path, errno);
			if (!t->size || t->size > bytes)
				t->size = bytes;
		} else if (S_ISREG(st.st_mode)) {
			if (!t->size)
				t->size = st.st_size;
			else if ((uint64_t)st.st_size < t->size && ftruncate(t->fd, t->size) < 0)
				fail(t->path, errno);
		} else {
			fail(t->path, ENOTBLK);
		}
		t->size &= ~((1ULL << SECTOR_SHIFT) - 1);
		if (!t->size)
			fail("the file is empty (give --size to grow it)", EINVAL);
		return;
	}
	if (!t->size)
		fail("--type ram and null need --size", EINVAL);
	if (t->type == TARGET_RAM) {
		/* A sparse in-memory file: pages are allocated on first write, never-written sectors
		 * read as zeros without allocating, and a discard punches the pages out again. */
		t->fd = memfd_create("ublk-ram", MFD_CLOEXEC);
		if (t->fd < 0 || ftruncate(t->fd, t->size) < 0)
			fail("allocate the disk", errno);
	}
}

/* ------------------------------------------------------------------ queues */

/* Queue a FETCH_REQ or COMMIT_AND_FETCH_REQ for one tag on the queue's ring. */
static void queue_io_cmd(struct queue *q, struct io_uring *ring, uint32_t op, unsigned int tag,
			 int result)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct ublksrv_io_cmd *cmd = (struct ublksrv_io_cmd *)sqe->cmd;

	if (!sqe) /* cannot happen: the ring has one entry per tag */
		fail("queue ring full", EBUSY);
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->dev->cdev_fd;
	sqe->cmd_op = op;
	sqe->user_data = tag;
	cmd->q_id = q->id;
	cmd->tag = tag;
	cmd->result = result;
	/* User copy: no address; the kernel refuses one (EINVAL). */
	cmd->addr = q->dev->copy == COPY_USER ? 0 : (uintptr_t)q->bufs[tag];
}

/* User copy: where the data of (queue, tag) appears in /dev/ublkcN. */
static off_t user_copy_offset(unsigned int q_id, unsigned int tag)
{
	return UBLKSRV_IO_BUF_OFFSET + ((off_t)q_id << UBLK_QID_OFF) + ((off_t)tag << UBLK_TAG_OFF);
}

/* Serve the request the kernel put in (q, tag): bytes done or -errno, the COMMIT result. */
static int serve_request(struct queue *q, unsigned int tag)
{
	struct device *d = q->dev;
	const struct ublksrv_io_desc *iod = &q->descs[tag];
	unsigned int op = ublksrv_get_op(iod);
	size_t len = (size_t)iod->nr_sectors << SECTOR_SHIFT;
	void *buf = q->bufs[tag];
	ssize_t n;
	int ret;

	if (len > IO_BUF_BYTES && (op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE))
		return -EIO; /* cannot happen: max_sectors says so */
	/* User copy, write: fetch the data from the request before writing it to the target. */
	if (d->copy == COPY_USER && op == UBLK_IO_OP_WRITE &&
	    (n = pread(d->cdev_fd, buf, len, user_copy_offset(q->id, tag))) != (ssize_t)len)
		return n < 0 ? -errno : -EIO;
	ret = target_io(&d->tgt, iod, buf, q->stats);
	/* User copy, read: hand the data to the request before committing it. */
	if (d->copy == COPY_USER && op == UBLK_IO_OP_READ && ret > 0 &&
	    (n = pwrite(d->cdev_fd, buf, ret, user_copy_offset(q->id, tag))) != ret)
		return n < 0 ? -errno : -EIO;
	if (d->tgt.type == TARGET_RAM && op != UBLK_IO_OP_READ && op != UBLK_IO_OP_FLUSH)
		atomic_store(&d->state->allocated, target_allocated(&d->tgt));
	return ret;
}

/* One thread per queue: keep a command pending per tag and answer requests as they come. */
static void *queue_thread(void *arg)
{
	struct queue *q = arg;
	struct device *d = q->dev;
	struct io_uring ring;
	unsigned int aborted = 0;
	char name[16];
	int ret;

	snprintf(name, sizeof(name), "ublk-q%u", q->id); /* shows in /proc/<pid>/task/<tid>/comm */
	pthread_setname_np(pthread_self(), name);
	q->stats->tid = gettid();
	ret = io_uring_queue_init(d->depth, &ring, 0);
	if (ret < 0) {
		atomic_store(&q->ready, -1);
		return NULL;
	}
	for (unsigned int tag = 0; tag < d->depth; tag++)
		queue_io_cmd(q, &ring, UBLK_U_IO_FETCH_REQ, tag, 0);
	ret = io_uring_submit(&ring);
	atomic_store(&q->ready, ret == (int)d->depth ? 1 : -1);

	while (aborted < d->depth) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec timeout = { .tv_sec = 1 };
		unsigned int head, seen = 0;

		ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &timeout, NULL);
		if (ret == -ETIME || ret == -EINTR) {
			if (atomic_load(&d->stopping) && ret == -ETIME)
				break; /* device gone and nothing left to complete */
			continue;
		}
		if (ret < 0) {
			fprintf(stderr, "ublk-server: queue %u wait: %s\n", q->id, strerror(-ret));
			break;
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			unsigned int tag = cqe->user_data;
			seen++;
			if (cqe->res == UBLK_IO_RES_ABORT) {
				aborted++; /* the device is being stopped: this tag is done */
				continue;
			}
			if (cqe->res != UBLK_IO_RES_OK) {
				fprintf(stderr, "ublk-server: queue %u tag %u: %s\n", q->id, tag,
					strerror(-cqe->res));
				aborted++;
				continue;
			}
			ret = serve_request(q, tag);
			if (ret < 0)
				q->stats->errors++;
			queue_io_cmd(q, &ring, UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, ret);
		}
		io_uring_cq_advance(&ring, seen);
	}
	io_uring_queue_exit(&ring);
	return NULL;
}

/* Map queue `i`'s descriptors, allocate its buffers and start its thread. */
static int queue_start(struct device *d, unsigned int i)
{
	struct queue *q = &d->queues[i];
	/* The kernel places queue i's descriptors at a fixed stride in the char device. */
	off_t offset = UBLKSRV_CMD_BUF_OFFSET +
		       (off_t)i * UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc);

	q->dev = d;
	q->id = i;
	q->stats = &d->state->queue[i];
	q->descs_len = (d->depth * sizeof(struct ublksrv_io_desc) + 4095) & ~4095UL;
	q->bufs = calloc(d->depth, sizeof(*q->bufs));
	if (!q->bufs)
		return -ENOMEM;
	for (unsigned int tag = 0; tag < d->depth; tag++)
		if (posix_memalign(&q->bufs[tag], 4096, IO_BUF_BYTES))
			return -ENOMEM;
	q->descs = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, d->cdev_fd, offset);
	if (q->descs == MAP_FAILED) {
		q->descs = NULL;
		return -errno;
	}
	if ((errno = pthread_create(&q->thread, NULL, queue_thread, q)))
		return -errno;
	d->nr_started = i + 1; /* from now on this thread must be joined before DEL_DEV */
	while (!atomic_load(&q->ready))
		usleep(1000);
	return atomic_load(&q->ready) < 0 ? -EIO : 0;
}

/* ------------------------------------------------------------------ add */

static void state_path(char *buf, size_t len, int id)
{
	snprintf(buf, len, STATE_DIR "/%d.state", id);
}

/* Create the shared state file of device d->id and map it. */
static int state_create(struct device *d)
{
	char path[64];
	int fd;

	mkdir(STATE_DIR, 0755);
	state_path(path, sizeof(path), d->id);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, sizeof(struct shared_state)) < 0)
		return -errno;
	d->state = mmap(NULL, sizeof(struct shared_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (d->state == MAP_FAILED)
		return -errno;
	snprintf(d->state->target, sizeof(d->state->target), "%s", target_names[d->tgt.type]);
	snprintf(d->state->file, sizeof(d->state->file), "%s", d->tgt.path ? d->tgt.path : "");
	d->state->size = d->tgt.size;
	d->state->nr_queues = d->nr_queues;
	d->state->depth = d->depth;
	return 0;
}

/* The steps from nothing to a live /dev/ublkbN; returns 0 or -errno with `step` naming it. */
static int device_create(struct device *d, const char **step)
{
	struct ublksrv_ctrl_dev_info info = { 0 };
	struct ublk_params params = { 0 };
	char path[64];
	int ret;

	*step = "open /dev/ublk-control (modprobe ublk_drv?)";
	if ((ret = control_open(&d->ctrl)) < 0)
		return ret;

	/* 1. ADD_DEV: the kernel picks a free id (dev_id -1) and creates /dev/ublkcN. */
	*step = "ADD_DEV";
	info.nr_hw_queues = d->nr_queues;
	info.queue_depth = d->depth;
	info.max_io_buf_bytes = IO_BUF_BYTES;
	info.dev_id = -1;
	info.flags = UBLK_F_CMD_IOCTL_ENCODE | (d->copy == COPY_USER ? UBLK_F_USER_COPY : 0);
	if ((ret = ctrl_cmd(&d->ctrl, -1, UBLK_U_CMD_ADD_DEV, &info, sizeof(info), 0)) < 0)
		return ret;
	d->id = info.dev_id;
	/* The kernel clears the flags it does not support (user copy needs Linux 6.5). */
	*step = "ADD_DEV: this kernel has no user copy (UBLK_F_USER_COPY, Linux 6.5)";
	if (d->copy == COPY_USER && !(info.flags & UBLK_F_USER_COPY))
		return -EOPNOTSUPP;
	/* The kernel writes back what it accepted: it caps the queues at the number of CPUs. */
	d->nr_queues = info.nr_hw_queues;
	d->depth = info.queue_depth;

	/* 2. SET_PARAMS: geometry of the block device. */
	*step = "SET_PARAMS";
	params.len = sizeof(params);
	params.types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
	params.basic.logical_bs_shift = 9;   /* 512-byte sectors */
	params.basic.physical_bs_shift = 12; /* 4 KiB pages behind them */
	params.basic.io_opt_shift = 12;
	params.basic.io_min_shift = 9;
	params.basic.max_sectors = IO_BUF_BYTES >> SECTOR_SHIFT;
	params.basic.dev_sectors = d->tgt.size >> SECTOR_SHIFT;
	/* A file sits in the page cache: ask the kernel to send flushes (fsync) through. */
	if (d->tgt.type == TARGET_FILE)
		params.basic.attrs = UBLK_ATTR_VOLATILE_CACHE;
	/* Discard and write-zeroes in whole pages, up to 1 GiB per request, one range each. */
	params.discard.discard_granularity = 4096;
	params.discard.max_discard_sectors = 1U << (30 - SECTOR_SHIFT);
	params.discard.max_write_zeroes_sectors = 1U << (30 - SECTOR_SHIFT);
	params.discard.max_discard_segments = 1;
	if ((ret = ctrl_cmd(&d->ctrl, d->id, UBLK_U_CMD_SET_PARAMS, &params, sizeof(params), 0)) < 0)
		return ret;

	*step = "state file " STATE_DIR;
	if ((ret = state_create(d)) < 0)
		return ret;

	/* 3. The char device, then one thread per queue with a FETCH_REQ per tag. */
	snprintf(path, sizeof(path), "/dev/ublkc%d", d->id);
	*step = "open the char device";
	for (int i = 0; i < 100 && (d->cdev_fd = open(path, O_RDWR)) < 0 && errno == ENOENT; i++)
		usleep(10000); /* devtmpfs creates the node asynchronously */
	if (d->cdev_fd < 0)
		return -errno;
	*step = "start the queues";
	for (unsigned int i = 0; i < d->nr_queues; i++)
		if ((ret = queue_start(d, i)) < 0)
			return ret;

	/* 4. START_DEV (waits until every tag has a fetch pending): /dev/ublkbN appears and the
	 * kernel reads its partition table, which the queue threads already serve. */
	*step = "START_DEV";
	return ctrl_cmd(&d->ctrl, d->id, UBLK_U_CMD_START_DEV, NULL, 0, getpid());
}

/* End the queue threads and release /dev/ublkcN (mappings and fd). DEL_DEV waits until the last
 * reference to the char device is gone, so it must come after this: sent while a queue thread
 * still holds the device, it would wait for this very process forever. */
static void device_release(struct device *d)
{
	atomic_store(&d->stopping, true);
	for (unsigned int i = 0; i < d->nr_started; i++)
		pthread_join(d->queues[i].thread, NULL);
	d->nr_started = 0;
	for (unsigned int i = 0; i < d->nr_queues; i++)
		if (d->queues[i].descs) {
			munmap((void *)d->queues[i].descs, d->queues[i].descs_len);
			d->queues[i].descs = NULL;
		}
	if (d->cdev_fd >= 0)
		close(d->cdev_fd);
	d->cdev_fd = -1;
}

/* Serve until SIGTERM/SIGINT, then stop and delete the device. */
static void device_serve(struct device *d, sigset_t *stop_signals)
{
	char path[64];
	int sig, ret;

	sigwait(stop_signals, &sig);
	fprintf(stderr, "ublk-server: device %d: stopping (signal %d)\n", d->id, sig);

	/* STOP_DEV removes /dev/ublkbN and aborts the pending fetches (the queue threads see
	 * UBLK_IO_RES_ABORT); then the threads end, and only then DEL_DEV frees the id. */
	atomic_store(&d->stopping, true);
	ret = ctrl_cmd(&d->ctrl, d->id, UBLK_U_CMD_STOP_DEV, NULL, 0, 0);
	if (ret < 0)
		fprintf(stderr, "ublk-server: STOP_DEV: %s\n", strerror(-ret));
	device_release(d);
	ret = ctrl_cmd(&d->ctrl, d->id, UBLK_U_CMD_DEL_DEV, NULL, 0, 0);
	if (ret < 0)
		fprintf(stderr, "ublk-server: DEL_DEV: %s\n", strerror(-ret));
	state_path(path, sizeof(path), d->id);
	unlink(path);
	fprintf(stderr, "ublk-server: device %d: removed\n", d->id);
}

static uint64_t parse_size(const char *arg)
{
	char *end;
	uint64_t n = strtoull(arg, &end, 0);

	switch (*end) {
	case 'G': case 'g': n <<= 10; /* fall through */
	case 'M': case 'm': n <<= 10; /* fall through */
	case 'K': case 'k': n <<= 10; end++; break;
	case 0: break;
	default: return 0;
	}
	return *end ? 0 : n;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: ublk-server add --type ram|null|file [--size S] [--file PATH] [--queues N] [--depth D]\n"
		"                       [--copy buffer|user]\n"
		"       ublk-server list\n"
		"       ublk-server del <id>\n");
	return 2;
}

static int cmd_add(int argc, char **argv)
{
	static const struct option options[] = {
		{ "type", required_argument, NULL, 't' }, { "size", required_argument, NULL, 's' },
		{ "file", required_argument, NULL, 'f' }, { "queues", required_argument, NULL, 'q' },
		{ "depth", required_argument, NULL, 'd' }, { "copy", required_argument, NULL, 'c' },
		{ 0 },
	};
	static struct device d = { .id = -1, .cdev_fd = -1, .nr_queues = 1, .depth = 32, .tgt.type = -1 };
	sigset_t stop_signals;
	const char *step = "";
	char msg[256];
	int opt, ret, report[2];
	ssize_t n;

	while ((opt = getopt_long(argc, argv, "t:s:f:q:d:c:", options, NULL)) != -1) {
		switch (opt) {
		case 't':
			for (int i = 0; i < 3; i++)
				if (!strcmp(optarg, target_names[i]))
					d.tgt.type = i;
			break;
		case 's':
			if (!(d.tgt.size = parse_size(optarg)) || d.tgt.size % 512)
				fail("--size must be a multiple of 512 bytes, e.g. 64M", EINVAL);
			break;
		case 'f': d.tgt.path = optarg; break;
		case 'q': d.nr_queues = strtoul(optarg, NULL, 0); break;
		case 'd': d.depth = strtoul(optarg, NULL, 0); break;
		case 'c':
			if (!strcmp(optarg, "user"))
				d.copy = COPY_USER;
			else if (strcmp(optarg, "buffer"))
				fail("--copy must be buffer or user", EINVAL);
			break;
		default: return usage();
		}
	}
	if ((int)d.tgt.type < 0 || optind != argc)
		return usage();
	if (d.nr_queues < 1 || d.nr_queues > MAX_QUEUES)
		fail("--queues must be 1..8", EINVAL);
	if (d.depth < 1 || d.depth > 1024)
		fail("--depth must be 1..1024", EINVAL);
	target_open(&d.tgt);

	/* The server runs in the background: a child in its own session, its output in the log.
	 * The child reports "OK <id>" or the failed step through a pipe before the parent exits. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	if (pipe(report) < 0)
		fail("pipe", errno);
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		fail("fork", errno);
	if (pid == 0) {
		int log = open(LOG_FILE, O_WRONLY | O_CREAT | O_APPEND, 0644);
		int null = open("/dev/null", O_RDWR);
		close(report[0]);
		setsid();
		if (chdir("/") < 0)
			_exit(1);
		dup2(null, 0);
		dup2(log >= 0 ? log : null, 1);
		dup2(log >= 0 ? log : null, 2);
		setvbuf(stderr, NULL, _IOLBF, 0);
		/* Every thread inherits the blocked stop signals; only sigwait() takes them. */
		pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
		/* Never wait for page-out to serve a write: the page-out may be to this device.
		 * ONFAULT locks pages as they are first touched, instead of faulting in every
		 * thread stack and buffer now. */
		if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0)
			fprintf(stderr, "ublk-server: mlockall: %s\n", strerror(errno));
		ret = device_create(&d, &step);
		if (ret < 0) {
			dprintf(report[1], "ERR %s: %s\n", step, strerror(-ret));
			device_release(&d);
			if (d.id >= 0) /* undo ADD_DEV, now that nothing here holds /dev/ublkcN */
				ctrl_cmd(&d.ctrl, d.id, UBLK_U_CMD_DEL_DEV, NULL, 0, 0);
			_exit(1);
		}
		fprintf(stderr, "ublk-server: device %d: serving %s\n", d.id, target_names[d.tgt.type]);
		dprintf(report[1], "OK %d %u %u\n", d.id, d.nr_queues, d.depth);
		close(report[1]);
		device_serve(&d, &stop_signals);
		_exit(0);
	}
	close(report[1]);
	n = read(report[0], msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = 0;
	if (strncmp(msg, "OK ", 3)) {
		fprintf(stderr, "ublk-server: %s", n > 0 ? msg + 4 : "the server died\n");
		return 1;
	}
	unsigned int asked = d.nr_queues, id;
	sscanf(msg + 3, "%u %u %u", &id, &d.nr_queues, &d.depth);
	printf("ublk-server: added device %u: /dev/ublkb%u (%s", id, id, target_names[d.tgt.type]);
	if (d.tgt.type == TARGET_FILE)
		printf(" %s", d.tgt.path);
	printf(", %" PRIu64 " MiB, %u queue%s, depth %u, %s copy), server pid %d\n",
	       d.tgt.size >> 20, d.nr_queues, d.nr_queues > 1 ? "s" : "", d.depth, copy_names[d.copy],
	       pid);
	if (d.nr_queues < asked)
		printf("ublk-server: asked for %u queues; ublk allows one per CPU\n", asked);
	return 0;
}

/* ------------------------------------------------------------------ list and del */

static const char *state_name(int state)
{
	switch (state) {
	case UBLK_S_DEV_DEAD: return "DEAD";
	case UBLK_S_DEV_LIVE: return "LIVE";
	case UBLK_S_DEV_QUIESCED: return "QUIESCED";
	default: return "?";
	}
}

/* Device ids present in the kernel, from /sys/class/ublk-char/ublkcN, in ascending order. */
static int device_ids(int *ids, int max)
{
	DIR *dir = opendir(CHAR_CLASS);
	struct dirent *e;
	int n = 0;

	while (dir && (e = readdir(dir)) && n < max)
		if (!strncmp(e->d_name, "ublkc", 5))
			ids[n++] = atoi(e->d_name + 5);
	if (dir)
		closedir(dir);
	for (int i = 1; i < n; i++) /* insertion sort: a handful of ids */
		for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
			int t = ids[j]; ids[j] = ids[j - 1]; ids[j - 1] = t;
		}
	return n;
}

/* "0-1,3"-style list of the CPUs in `set`, or "-" for none. */
static void cpu_list(const cpu_set_t *set, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = 0;
	for (int cpu = 0; cpu < CPU_SETSIZE && used < len; cpu++) {
		if (!CPU_ISSET(cpu, set) || (cpu > 0 && CPU_ISSET(cpu - 1, set)))
			continue;
		int last = cpu;
		while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, set))
			last++;
		used += snprintf(buf + used, len - used, used ? ",%d" : "%d", cpu);
		if (last > cpu && used < len)
			used += snprintf(buf + used, len - used, "-%d", last);
	}
	if (!buf[0])
		snprintf(buf, len, "-");
}

static int cmd_list(void)
{
	struct control c;
	int ids[64], n, ret;

	n = device_ids(ids, 64);
	if (!n) {
		printf("no ublk devices\n");
		return 0;
	}
	if ((ret = control_open(&c)) < 0)
		fail("open /dev/ublk-control", -ret);
	for (int i = 0; i < n; i++) {
		struct ublksrv_ctrl_dev_info info = { 0 };
		struct shared_state st = { 0 };
		char path[64];
		int fd;

		if ((ret = ctrl_cmd(&c, ids[i], UBLK_U_CMD_GET_DEV_INFO, &info, sizeof(info), 0)) < 0) {
			printf("ublk device %d: GET_DEV_INFO: %s\n", ids[i], strerror(-ret));
			continue;
		}
		state_path(path, sizeof(path), ids[i]);
		fd = open(path, O_RDONLY);
		bool have_state = fd >= 0 && read(fd, &st, sizeof(st)) == sizeof(st);
		if (fd >= 0)
			close(fd);
		/* A server killed with SIGKILL never cleans up: the kernel keeps its pid. */
		bool gone = info.ublksrv_pid <= 0 || (kill(info.ublksrv_pid, 0) < 0 && errno == ESRCH);
		printf("dev %d: /dev/ublkb%d /dev/ublkc%d  state %s  queues %u  depth %u  max io %u KiB"
		       "  server pid %d%s\n", ids[i], ids[i], ids[i], state_name(info.state),
		       info.nr_hw_queues, info.queue_depth, info.max_io_buf_bytes >> 10, info.ublksrv_pid,
		       gone ? " (gone)" : "");
		/* The copy mode as the kernel accepted it, not as asked. */
		printf("  flags 0x%llx  copy %s\n", (unsigned long long)info.flags,
		       info.flags & UBLK_F_USER_COPY ? "user" : "buffer");
		if (have_state) {
			printf("  target %s%s%s  size %" PRIu64 " MiB", st.target, st.file[0] ? " " : "",
			       st.file, st.size >> 20);
			if (!strcmp(st.target, "ram"))
				printf("  memory used %" PRIu64 " KiB", (uint64_t)st.allocated >> 10);
			printf("\n");
		} else
			printf("  target unknown (not served by ublk-server)\n");
		for (unsigned int qid = 0; qid < info.nr_hw_queues; qid++) {
			cpu_set_t cpus;
			char cpubuf[64];

			/* Which CPUs submit to this queue: blk-mq's mapping, as ublk_drv reports it. */
			CPU_ZERO(&cpus);
			if (ctrl_cmd(&c, ids[i], UBLK_U_CMD_GET_QUEUE_AFFINITY, &cpus, sizeof(cpus), qid) < 0)
				CPU_ZERO(&cpus);
			cpu_list(&cpus, cpubuf, sizeof(cpubuf));
			printf("  queue %u: cpus %s", qid, cpubuf);
			if (have_state && qid < MAX_QUEUES) {
				struct queue_stats *q = &st.queue[qid];
				printf("  thread %d  reads %" PRIu64 " (%" PRIu64 " KiB)  writes %" PRIu64
				       " (%" PRIu64 " KiB)  flushes %" PRIu64 "  discards %" PRIu64
				       "  errors %" PRIu64, q->tid, q->reads, q->bytes_read >> 10, q->writes,
				       q->bytes_written >> 10, q->flushes, q->discards, q->errors);
			}
			printf("\n");
		}
	}
	return 0;
}

/* Is /dev/ublkbN mounted? Deleting it would pull the disk from under the filesystem. */
static bool is_mounted(int id)
{
	char dev[32], line[512];
	FILE *f = fopen("/proc/self/mounts", "r");
	bool found = false;

	snprintf(dev, sizeof(dev), "/dev/ublkb%d ", id);
	while (f && !found && fgets(line, sizeof(line), f))
		found = !strncmp(line, dev, strlen(dev));
	if (f)
		fclose(f);
	return found;
}

static int cmd_del(const char *arg)
{
	struct ublksrv_ctrl_dev_info info = { 0 };
	struct control c;
	char *end, path[64];
	int id = strtol(arg, &end, 10), ret;

	if (*end || id < 0)
		return usage();
	if (is_mounted(id)) {
		fprintf(stderr, "ublk-server: /dev/ublkb%d is mounted: umount it first\n", id);
		return 1;
	}
	if ((ret = control_open(&c)) < 0)
		fail("open /dev/ublk-control", -ret);
	if ((ret = ctrl_cmd(&c, id, UBLK_U_CMD_GET_DEV_INFO, &info, sizeof(info), 0)) < 0)
		fail("no such device", -ret);
	snprintf(path, sizeof(path), CHAR_CLASS "/ublkc%d", id);
	if (info.ublksrv_pid > 0 && kill(info.ublksrv_pid, SIGTERM) == 0) {
		/* The server stops and deletes the device itself; wait for it (up to 10 s). */
		for (int i = 0; i < 1000 && access(path, F_OK) == 0; i++)
			usleep(10000);
	} else {
		/* No server left (it crashed or was killed): stop and delete from here. */
		ctrl_cmd(&c, id, UBLK_U_CMD_STOP_DEV, NULL, 0, 0);
		ret = ctrl_cmd(&c, id, UBLK_U_CMD_DEL_DEV, NULL, 0, 0);
		if (ret < 0)
			fail("DEL_DEV", -ret);
		state_path(path, sizeof(path), id);
		unlink(path);
		snprintf(path, sizeof(path), CHAR_CLASS "/ublkc%d", id);
	}
	if (access(path, F_OK) == 0) {
		fprintf(stderr, "ublk-server: device %d is still there\n", id);
		return 1;
	}
	printf("ublk-server: deleted device %d\n", id);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "add"))
		return cmd_add(argc - 1, argv + 1);
	if (argc == 2 && !strcmp(argv[1], "list"))
		return cmd_list();
	if (argc == 3 && !strcmp(argv[1], "del"))
		return cmd_del(argv[2]);
	return usage();
}

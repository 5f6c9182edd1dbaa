/*
 * ublk-ram: a RAM-backed block device served from user space through ublk.
 *
 *   ublk-ram <size>[K|M|G] [queue-depth]
 *
 * creates /dev/ublkbN, prints "ublk-ram: /dev/ublkbN ready ..." and serves I/O until it gets
 * SIGINT or SIGTERM; then it stops and deletes the device. Needs `modprobe ublk_drv`.
 *
 * How ublk works (Linux >= 6.0):
 *  - /dev/ublk-control takes control commands (add, set parameters, start, stop, delete),
 *    sent as io_uring URING_CMD requests with 128-byte SQEs.
 *  - Adding device N creates the char device /dev/ublkcN. The server mmaps from it an array of
 *    I/O descriptors (one per tag: operation, sector, length) and, for each tag, submits a
 *    FETCH_REQ URING_CMD that stays pending until the kernel has a request for that tag.
 *  - START_DEV creates the block device /dev/ublkbN. When a block request arrives, the
 *    pending command of its tag completes; the server reads the descriptor, does the I/O
 *    (here: memcpy to or from a RAM buffer) and sends COMMIT_AND_FETCH_REQ with the result,
 *    which completes the block request and waits for the next one in the same step.
 *  - Data moves through a per-tag buffer whose address the server gives with each command:
 *    the kernel copies write data into it before completing the fetch, and copies read data
 *    out of it when the server commits.
 *
 * One hardware queue served by one thread; the main thread does the control commands.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/ublk_cmd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* Debian 12's uapi header predates the ioctl-encoded opcodes; they are what the kernel
 * prefers (the bare numbers are the "legacy" opcodes). */
#ifndef UBLK_U_CMD_ADD_DEV
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

#define SECTOR_SHIFT 9
#define IO_BUF_BYTES (64 * 1024) /* largest request; one buffer per tag */

struct server {
	int ctrl_fd;               /* /dev/ublk-control */
	struct io_uring ctrl_ring; /* 128-byte SQEs: control commands carry 32 bytes */
	int dev_id;
	int cdev_fd;               /* /dev/ublkcN */
	unsigned int depth;
	const struct ublksrv_io_desc *descs; /* shared with the kernel, one per tag */
	void **bufs;               /* per-tag data buffers */
	uint8_t *ram;              /* the disk contents */
	uint64_t size;
	atomic_bool stopping;
	atomic_int queue_ready;    /* 1 once every tag has a FETCH_REQ pending, -1 on error */
};

static void die(const char *what, int err)
{
	fprintf(stderr, "ublk-ram: %s: %s\n", what, strerror(err));
	exit(1);
}

/* Send one control command and wait for its result (a negative errno on failure). */
static int ctrl_cmd(struct server *s, uint32_t op, uint64_t addr, uint16_t len, uint64_t data0)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ctrl_ring);
	struct ublksrv_ctrl_cmd *cmd = (struct ublksrv_ctrl_cmd *)sqe->cmd;
	struct io_uring_cqe *cqe;
	int ret;

	if (!sqe)
		return -EBUSY;
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = s->ctrl_fd;
	sqe->cmd_op = op;
	cmd->dev_id = s->dev_id;
	cmd->queue_id = (uint16_t)-1; /* not a per-queue command */
	cmd->addr = addr;
	cmd->len = len;
	cmd->data[0] = data0;
	ret = io_uring_submit_and_wait(&s->ctrl_ring, 1);
	if (ret < 0)
		return ret;
	ret = io_uring_wait_cqe(&s->ctrl_ring, &cqe);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&s->ctrl_ring, cqe);
	return ret;
}

/* Queue a FETCH_REQ or COMMIT_AND_FETCH_REQ for one tag on the queue's ring. */
static void queue_io_cmd(struct server *s, struct io_uring *ring, uint32_t op, unsigned int tag,
			 int result)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	struct ublksrv_io_cmd *cmd = (struct ublksrv_io_cmd *)sqe->cmd;

	if (!sqe) /* cannot happen: the ring has one entry per tag */
		die("queue ring full", EBUSY);
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = s->cdev_fd;
	sqe->cmd_op = op;
	sqe->user_data = tag;
	cmd->q_id = 0;
	cmd->tag = tag;
	cmd->result = result;
	cmd->addr = (uintptr_t)s->bufs[tag];
}

/* Do the I/O a descriptor asks for against the RAM disk; returns bytes done or -errno. */
static int handle_io(struct server *s, unsigned int tag)
{
	const struct ublksrv_io_desc *iod = &s->descs[tag];
	uint64_t off = iod->start_sector << SECTOR_SHIFT;
	uint64_t len = (uint64_t)iod->nr_sectors << SECTOR_SHIFT;

	if (off > s->size || len > s->size - off)
		return -EIO;
	switch (ublksrv_get_op(iod)) {
	case UBLK_IO_OP_READ:
		memcpy(s->bufs[tag], s->ram + off, len);
		return len;
	case UBLK_IO_OP_WRITE:
		memcpy(s->ram + off, s->bufs[tag], len);
		return len;
	case UBLK_IO_OP_FLUSH: /* RAM has no volatile cache to flush */
		return 0;
	default:
		return -EOPNOTSUPP;
	}
}

/* The queue thread: keep one command pending per tag and answer requests as they come. */
static void *queue_thread(void *arg)
{
	struct server *s = arg;
	struct io_uring ring;
	unsigned int aborted = 0;
	int ret;

	ret = io_uring_queue_init(s->depth, &ring, 0);
	if (ret < 0) {
		fprintf(stderr, "ublk-ram: queue ring: %s\n", strerror(-ret));
		atomic_store(&s->queue_ready, -1);
		return NULL;
	}
	for (unsigned int tag = 0; tag < s->depth; tag++)
		queue_io_cmd(s, &ring, UBLK_U_IO_FETCH_REQ, tag, 0);
	ret = io_uring_submit(&ring);
	atomic_store(&s->queue_ready, ret == (int)s->depth ? 1 : -1);

	while (aborted < s->depth) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec timeout = { .tv_sec = 1 };

		ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &timeout, NULL);
		if (ret == -ETIME || ret == -EINTR) {
			if (atomic_load(&s->stopping) && ret == -ETIME)
				break; /* device gone and nothing left to complete */
			continue;
		}
		if (ret < 0) {
			fprintf(stderr, "ublk-ram: queue wait: %s\n", strerror(-ret));
			break;
		}
		unsigned int head, seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe) {
			unsigned int tag = cqe->user_data;
			seen++;
			if (cqe->res == UBLK_IO_RES_ABORT) {
				aborted++; /* the device is being stopped: this tag is done */
				continue;
			}
			if (cqe->res != UBLK_IO_RES_OK) {
				fprintf(stderr, "ublk-ram: tag %u: command failed: %s\n", tag,
					strerror(-cqe->res));
				aborted++;
				continue;
			}
			queue_io_cmd(s, &ring, UBLK_U_IO_COMMIT_AND_FETCH_REQ, tag, handle_io(s, tag));
		}
		io_uring_cq_advance(&ring, seen);
	}
	io_uring_queue_exit(&ring);
	return NULL;
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

int main(int argc, char **argv)
{
	struct server s = { .dev_id = -1, .depth = 32 };
	struct ublksrv_ctrl_dev_info info = { 0 };
	struct ublk_params params = { 0 };
	char path[64];
	pthread_t queue;
	sigset_t sigs;
	size_t descs_len;
	int sig, ret;

	if (argc < 2 || argc > 3 || !(s.size = parse_size(argv[1])) || s.size % 4096) {
		fprintf(stderr, "usage: ublk-ram <size>[K|M|G] [queue-depth]  (size: multiple of 4 KiB)\n");
		return 2;
	}
	if (argc == 3)
		s.depth = strtoul(argv[2], NULL, 0);
	if (s.depth < 1 || s.depth > UBLK_MAX_QUEUE_DEPTH) {
		fprintf(stderr, "ublk-ram: queue depth must be 1..%d\n", UBLK_MAX_QUEUE_DEPTH);
		return 2;
	}

	/* Block the stop signals in every thread; main waits for them with sigwait(). */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	/* Pages are allocated on first write; never-written sectors read as zeros. */
	s.ram = mmap(NULL, s.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		     -1, 0);
	if (s.ram == MAP_FAILED)
		die("allocate the disk", errno);

	s.ctrl_fd = open("/dev/ublk-control", O_RDWR);
	if (s.ctrl_fd < 0)
		die("open /dev/ublk-control (modprobe ublk_drv?)", errno);
	ret = io_uring_queue_init(4, &s.ctrl_ring, IORING_SETUP_SQE128);
	if (ret < 0)
		die("control ring", -ret);

	/* 1. ADD_DEV: the kernel picks a free id (dev_id -1) and creates /dev/ublkcN. */
	info.nr_hw_queues = 1;
	info.queue_depth = s.depth;
	info.max_io_buf_bytes = IO_BUF_BYTES;
	info.dev_id = -1;
	info.flags = UBLK_F_CMD_IOCTL_ENCODE;
	ret = ctrl_cmd(&s, UBLK_U_CMD_ADD_DEV, (uintptr_t)&info, sizeof(info), 0);
	if (ret < 0)
		die("ADD_DEV", -ret);
	s.dev_id = info.dev_id;

	/* 2. SET_PARAMS: geometry of the block device. */
	params.len = sizeof(params);
	params.types = UBLK_PARAM_TYPE_BASIC;
	params.basic.logical_bs_shift = 9;   /* 512-byte sectors */
	params.basic.physical_bs_shift = 12; /* 4 KiB pages behind them */
	params.basic.io_opt_shift = 12;
	params.basic.io_min_shift = 9;
	params.basic.max_sectors = IO_BUF_BYTES >> SECTOR_SHIFT;
	params.basic.dev_sectors = s.size >> SECTOR_SHIFT;
	ret = ctrl_cmd(&s, UBLK_U_CMD_SET_PARAMS, (uintptr_t)&params, sizeof(params), 0);
	if (ret < 0)
		die("SET_PARAMS", -ret);

	/* 3. The char device: map queue 0's descriptor array, one buffer per tag. */
	snprintf(path, sizeof(path), "/dev/ublkc%d", s.dev_id);
	for (int i = 0; i < 100 && (s.cdev_fd = open(path, O_RDWR)) < 0 && errno == ENOENT; i++)
		usleep(10000); /* devtmpfs creates the node asynchronously */
	if (s.cdev_fd < 0)
		die(path, errno);
	descs_len = (s.depth * sizeof(struct ublksrv_io_desc) + 4095) & ~4095UL;
	s.descs = mmap(NULL, descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, s.cdev_fd,
		       UBLKSRV_CMD_BUF_OFFSET);
	if (s.descs == MAP_FAILED)
		die("mmap the I/O descriptors", errno);
	s.bufs = calloc(s.depth, sizeof(*s.bufs));
	for (unsigned int tag = 0; tag < s.depth; tag++)
		if (posix_memalign(&s.bufs[tag], 4096, IO_BUF_BYTES))
			die("allocate I/O buffers", ENOMEM);

	/* 4. The queue thread submits a FETCH_REQ per tag; START_DEV waits for all of them. */
	pthread_create(&queue, NULL, queue_thread, &s);
	while (!atomic_load(&s.queue_ready))
		usleep(1000);
	if (atomic_load(&s.queue_ready) < 0)
		die("submit FETCH_REQ", EIO);

	/* 5. START_DEV: /dev/ublkbN appears; the kernel already reads its partition table, which
	 * the queue thread serves. */
	ret = ctrl_cmd(&s, UBLK_U_CMD_START_DEV, 0, 0, getpid());
	if (ret < 0)
		die("START_DEV", -ret);
	printf("ublk-ram: /dev/ublkb%d ready: %" PRIu64 " MiB of RAM, 1 queue, depth %u\n", s.dev_id,
	       s.size >> 20, s.depth);
	fflush(stdout);

	sigwait(&sigs, &sig);

	/* 6. STOP_DEV removes /dev/ublkbN and aborts the pending fetches; DEL_DEV frees the id. */
	atomic_store(&s.stopping, true);
	ret = ctrl_cmd(&s, UBLK_U_CMD_STOP_DEV, 0, 0, 0);
	if (ret < 0)
		fprintf(stderr, "ublk-ram: STOP_DEV: %s\n", strerror(-ret));
	pthread_join(queue, NULL);
	/* DEL_DEV waits until the char device is released, mappings included. */
	munmap((void *)s.descs, descs_len);
	close(s.cdev_fd);
	ret = ctrl_cmd(&s, UBLK_U_CMD_DEL_DEV, 0, 0, 0);
	if (ret < 0)
		die("DEL_DEV", -ret);
	printf("ublk-ram: /dev/ublkb%d removed\n", s.dev_id);
	return 0;
}

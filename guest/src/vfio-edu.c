/*
 * vfio-edu: a user-space driver for QEMU's "edu" teaching PCI device (1234:11e8), written
 * against the Linux VFIO API one step at a time.
 *
 * Each subcommand is one stage of bringing the device up. A stage first redoes the earlier
 * stages quietly (every run is a fresh process, and VFIO state lives in open file descriptors),
 * then performs its own step and explains it:
 *
 *   vfio-edu container        open /dev/vfio/vfio, check the API version and the type1v2 IOMMU
 *   vfio-edu group [N]        open /dev/vfio/N, check it is viable, attach it to the container
 *   vfio-edu iommu            select the type1v2 IOMMU model for the container
 *   vfio-edu device [DEV]     get a device fd for the edu device from its group
 *   vfio-edu regions [DEV]    list the device's regions (BARs, ROM, config space)
 *   vfio-edu irqs [DEV]       list the device's interrupt types (INTx, MSI, MSI-X, ...)
 *   vfio-edu bar0             mmap BAR0, read the ID register, exercise the liveness register
 *   vfio-edu factorial <n>    let the device compute n!
 *   vfio-edu dma              map a buffer for DMA and do a RAM -> device -> RAM round trip
 *   vfio-edu all              every stage above, in order
 *
 * Stages beyond the basic bring-up (not part of "all"):
 *   vfio-edu irq              route MSI to an eventfd, raise edu's interrupt, read it, acknowledge
 *   vfio-edu fault            let the device read an IOVA that was never mapped (an IOMMU fault)
 *   vfio-edu uart DEV TEXT    write TEXT to port 0 of an mtty mediated device, read it back
 *   vfio-edu hold DEV SECONDS keep DEV's fd open for SECONDS (to watch a removal wait for it)
 *
 * Before running it, hand the device to vfio-pci (the edu device has no kernel driver):
 *   modprobe vfio-pci
 *   echo vfio-pci > /sys/bus/pci/devices/<BDF>/driver_override
 *   echo <BDF> > /sys/bus/pci/drivers_probe
 *
 * The group number and BDF are found in sysfs when not given. DEV may also name another VFIO
 * device, such as a mediated device by its UUID. Exit status is 0 on success,
 * 1 when a stage fails, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <linux/pci_regs.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* edu register map (QEMU docs/specs/edu.rst); all registers are in BAR0. */
#define EDU_VENDOR        0x1234
#define EDU_DEVICE        0x11e8
#define EDU_REG_ID        0x00 /* 0xRRrr00edu: major.minor version and the magic 0xed */
#define EDU_REG_LIVENESS  0x04 /* reads back the bitwise inverse of what was written */
#define EDU_REG_FACTORIAL 0x08 /* write n, read n! once the status "computing" bit clears */
#define EDU_REG_STATUS    0x20 /* bit 0: factorial computing */
#define EDU_REG_IRQ_STATUS 0x24 /* the raised interrupt bits, until acknowledged */
#define EDU_REG_IRQ_RAISE 0x60 /* writing bits here sets them in IRQ status and fires the IRQ */
#define EDU_REG_IRQ_ACK   0x64 /* writing bits here clears them; the IRQ drops when none are left */
#define EDU_REG_DMA_SRC   0x80
#define EDU_REG_DMA_DST   0x88
#define EDU_REG_DMA_COUNT 0x90
#define EDU_REG_DMA_CMD   0x98 /* bit 0: start/busy, bit 1: direction (1 = device -> RAM) */
#define EDU_STATUS_COMPUTING 0x01
#define EDU_DMA_START      0x01
#define EDU_DMA_TO_RAM     0x02
#define EDU_DMA_BUFFER     0x40000 /* the device's internal 4 KiB buffer, as a device address */

/*
 * QEMU 7.2's edu checks the DMA range off by one: a transfer of the full 4096 bytes is
 * reported as out of bounds and kills the whole VM ("hardware error"). 4095 is the largest
 * safe size.
 */
#define DMA_BYTES 4095
/* Where the buffer appears in the device's (IOMMU-translated) address space. edu only
 * drives 28 address bits, so the IOVA must stay below 256 MiB. */
#define DMA_IOVA 0x100000
/* An IOVA no one maps: the fault stage points the device at it. */
#define FAULT_IOVA 0x4000000
/* mtty's port 0 is a 16550-style UART in BAR0 (an 8-byte I/O region): the data register at 0,
 * the line status register at 5. mtty loops what is transmitted back into its 16-byte FIFO. */
#define UART_DATA 0
#define UART_LSR 5
#define UART_LSR_DATA_READY 0x01
#define UART_FIFO_BYTES 16

struct vfio {
	int container;    /* /dev/vfio/vfio: an IOMMU context (address space) */
	int group;        /* /dev/vfio/<N>: the devices that share an IOMMU isolation domain */
	int device;       /* one PCI function, gives access to its regions and interrupts */
	int group_number; /* -1 until known: group 0 is a real group */
	char bdf[256];    /* PCI address, e.g. 0000:00:03.0 */
	volatile uint8_t *bar0;
	size_t bar0_size;
};

static bool verbose = true; /* false while replaying earlier stages */

static void say(const char *fmt, ...)
{
	va_list ap;
	if (!verbose)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

/* Report a failure with errno's explanation and end the program. */
static void fail(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;
	fprintf(stderr, "vfio-edu: FAILED: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (saved)
		fprintf(stderr, ": %s", strerror(saved));
	fprintf(stderr, "\n");
	exit(1);
}

static unsigned long read_hex_file(const char *path)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");
	if (!f)
		return ULONG_MAX;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return strtoul(buf, NULL, 16);
}

/* Find the edu device in sysfs; fills v->bdf. */
static void find_edu(struct vfio *v)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	char path[PATH_MAX];

	if (!d)
		fail("cannot list /sys/bus/pci/devices");
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (read_hex_file(path) != EDU_VENDOR)
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/device", e->d_name);
		if (read_hex_file(path) != EDU_DEVICE)
			continue;
		snprintf(v->bdf, sizeof(v->bdf), "%s", e->d_name);
		closedir(d);
		return;
	}
	closedir(d);
	errno = 0;
	fail("no edu device (%04x:%04x) on the PCI bus; start QEMU with -device edu",
	     EDU_VENDOR, EDU_DEVICE);
}

/*
 * The IOMMU group of a device is the target of its iommu_group symlink: .../iommu_groups/<N>.
 * A PCI function lives on the pci bus; a mediated device (named by its UUID) on the mdev bus.
 */
static int iommu_group_of(const char *bdf)
{
	char link[PATH_MAX], target[PATH_MAX];
	ssize_t n;

	snprintf(link, sizeof(link), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0) {
		snprintf(link, sizeof(link), "/sys/bus/mdev/devices/%s/iommu_group", bdf);
		n = readlink(link, target, sizeof(target) - 1);
	}
	if (n < 0)
		fail("%s has no IOMMU group (is the vIOMMU on? -device intel-iommu and "
		     "intel_iommu=on on the kernel command line)", bdf);
	target[n] = 0;
	return atoi(strrchr(target, '/') + 1);
}

/* Stage: the container is the IOMMU context that groups get attached to. */
static void stage_container(struct vfio *v)
{
	int api;

	say("== container ==\n");
	v->container = open("/dev/vfio/vfio", O_RDWR);
	if (v->container < 0)
		fail("open /dev/vfio/vfio (modprobe vfio-pci?)");
	api = ioctl(v->container, VFIO_GET_API_VERSION);
	if (api != VFIO_API_VERSION)
		fail("VFIO API version %d, this program speaks %d", api, VFIO_API_VERSION);
	say("opened /dev/vfio/vfio: API version %d\n", api);
	if (ioctl(v->container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
		errno = 0;
		fail("the type1v2 IOMMU backend is not available (modprobe vfio_iommu_type1)");
	}
	say("type1v2 IOMMU backend: supported\n");
}

/* Stage: a group is the unit of isolation; no device in it may be held by a non-VFIO driver. */
static void stage_group(struct vfio *v)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	char path[64];

	say("== group %d (device %s) ==\n", v->group_number, v->bdf);
	snprintf(path, sizeof(path), "/dev/vfio/%d", v->group_number);
	v->group = open(path, O_RDWR);
	if (v->group < 0)
		fail("open %s (is %s bound to vfio-pci?)", path, v->bdf);
	if (ioctl(v->group, VFIO_GROUP_GET_STATUS, &status))
		fail("VFIO_GROUP_GET_STATUS");
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		errno = 0;
		fail("group %d is not viable: unbind its other devices or bind them to vfio-pci", v->group_number);
	}
	say("opened %s: viable (no device in the group has a non-VFIO driver)\n", path);
	if (ioctl(v->group, VFIO_GROUP_SET_CONTAINER, &v->container))
		fail("VFIO_GROUP_SET_CONTAINER");
	say("group attached to the container\n");
}

/* Stage: choose the IOMMU model; from now on DMA mappings can be made. */
static void stage_iommu(struct vfio *v)
{
	struct vfio_iommu_type1_info info = { .argsz = sizeof(info) };

	say("== iommu ==\n");
	if (ioctl(v->container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		fail("VFIO_SET_IOMMU(type1v2)");
	say("container uses the type1v2 IOMMU\n");
	if (ioctl(v->container, VFIO_IOMMU_GET_INFO, &info))
		fail("VFIO_IOMMU_GET_INFO");
	if (info.flags & VFIO_IOMMU_INFO_PGSIZES)
		say("supported IOMMU page sizes: 0x%" PRIx64 " (smallest %" PRIu64 " bytes)\n",
		    (uint64_t)info.iova_pgsizes,
		    (uint64_t)(info.iova_pgsizes & -info.iova_pgsizes));
}

/* Stage: a device fd gives access to the function's regions and interrupts. */
static void stage_device(struct vfio *v)
{
	struct vfio_device_info info = { .argsz = sizeof(info) };

	say("== device %s ==\n", v->bdf);
	v->device = ioctl(v->group, VFIO_GROUP_GET_DEVICE_FD, v->bdf);
	if (v->device < 0)
		fail("VFIO_GROUP_GET_DEVICE_FD(%s)", v->bdf);
	if (ioctl(v->device, VFIO_DEVICE_GET_INFO, &info))
		fail("VFIO_DEVICE_GET_INFO");
	say("device fd %d: %s device, %u regions, %u interrupt types%s\n", v->device,
	    (info.flags & VFIO_DEVICE_FLAGS_PCI) ? "PCI" : "non-PCI", info.num_regions,
	    info.num_irqs, (info.flags & VFIO_DEVICE_FLAGS_RESET) ? ", supports reset" : "");
}

static const char *region_name(unsigned int i)
{
	static const char *names[] = { "BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5",
				       "ROM", "CONFIG", "VGA" };
	return i < sizeof(names) / sizeof(names[0]) ? names[i] : "other";
}

static struct vfio_region_info region_info(struct vfio *v, unsigned int index)
{
	struct vfio_region_info r = { .argsz = sizeof(r), .index = index };
	if (ioctl(v->device, VFIO_DEVICE_GET_REGION_INFO, &r))
		fail("VFIO_DEVICE_GET_REGION_INFO(%u)", index);
	return r;
}

/* Stage: regions are the device's BARs etc.; each has an offset into the device fd. */
static void stage_regions(struct vfio *v)
{
	struct vfio_device_info info = { .argsz = sizeof(info) };

	say("== regions ==\n");
	if (ioctl(v->device, VFIO_DEVICE_GET_INFO, &info))
		fail("VFIO_DEVICE_GET_INFO");
	for (unsigned int i = 0; i < info.num_regions; i++) {
		struct vfio_region_info r = { .argsz = sizeof(r), .index = i };
		if (ioctl(v->device, VFIO_DEVICE_GET_REGION_INFO, &r)) {
			/* vfio-pci always counts the VGA region but only VGA devices have it; any
			 * other failure is a real error. */
			if (errno != EINVAL || i != VFIO_PCI_VGA_REGION_INDEX)
				fail("VFIO_DEVICE_GET_REGION_INFO(%u)", i);
			say("  %-6s (index %u): not present\n", region_name(i), i);
			continue;
		}
		if (!r.size) {
			say("  %-6s (index %u): not implemented\n", region_name(i), i);
			continue;
		}
		say("  %-6s (index %u): size 0x%" PRIx64 " at fd offset 0x%" PRIx64 "%s%s%s\n",
		    region_name(i), i, (uint64_t)r.size, (uint64_t)r.offset,
		    (r.flags & VFIO_REGION_INFO_FLAG_READ) ? " read" : "",
		    (r.flags & VFIO_REGION_INFO_FLAG_WRITE) ? " write" : "",
		    (r.flags & VFIO_REGION_INFO_FLAG_MMAP) ? " mmap" : "");
	}
}

/* Stage: interrupts are delivered through eventfds set up with VFIO_DEVICE_SET_IRQS. */
static void stage_irqs(struct vfio *v)
{
	static const char *names[] = { "INTx", "MSI", "MSI-X", "ERR", "REQ" };
	struct vfio_device_info info = { .argsz = sizeof(info) };

	say("== irqs ==\n");
	if (ioctl(v->device, VFIO_DEVICE_GET_INFO, &info))
		fail("VFIO_DEVICE_GET_INFO");
	for (unsigned int i = 0; i < info.num_irqs; i++) {
		struct vfio_irq_info irq = { .argsz = sizeof(irq), .index = i };
		if (ioctl(v->device, VFIO_DEVICE_GET_IRQ_INFO, &irq)) {
			/* ERR needs a PCIe device with AER; the index is counted anyway. */
			if (errno != EINVAL)
				fail("VFIO_DEVICE_GET_IRQ_INFO(%u)", i);
			say("  %-5s (index %u): not present\n", i < 5 ? names[i] : "other", i);
			continue;
		}
		say("  %-5s (index %u): %u vector(s)%s\n", i < 5 ? names[i] : "other", i,
		    irq.count, (irq.flags & VFIO_IRQ_INFO_EVENTFD) ? ", eventfd" : "");
	}
}

static uint32_t rd32(struct vfio *v, unsigned int reg)
{
	return *(volatile uint32_t *)(v->bar0 + reg);
}

static void wr32(struct vfio *v, unsigned int reg, uint32_t val)
{
	*(volatile uint32_t *)(v->bar0 + reg) = val;
}

static void wr64(struct vfio *v, unsigned int reg, uint64_t val)
{
	*(volatile uint64_t *)(v->bar0 + reg) = val;
}

/* Stage: map BAR0 into our address space; loads and stores now reach the device. */
static void stage_bar0(struct vfio *v)
{
	struct vfio_region_info r = region_info(v, VFIO_PCI_BAR0_REGION_INDEX);
	uint32_t id, probe = 0x12345678, back;

	say("== bar0 ==\n");
	if (!(r.flags & VFIO_REGION_INFO_FLAG_MMAP)) {
		errno = 0;
		fail("BAR0 cannot be mmapped");
	}
	v->bar0 = mmap(NULL, r.size, PROT_READ | PROT_WRITE, MAP_SHARED, v->device, r.offset);
	if (v->bar0 == MAP_FAILED)
		fail("mmap BAR0");
	v->bar0_size = r.size;
	say("BAR0 mapped: 0x%zx bytes at %p\n", v->bar0_size, (void *)v->bar0);

	id = rd32(v, EDU_REG_ID);
	say("ID register (0x00) = 0x%08x: version %u.%u, magic 0x%02x\n", id, id >> 24,
	    (id >> 16) & 0xff, id & 0xff);
	if ((id & 0xff) != 0xed) {
		errno = 0;
		fail("ID register magic is 0x%02x, expected 0xed", id & 0xff);
	}
	wr32(v, EDU_REG_LIVENESS, probe);
	back = rd32(v, EDU_REG_LIVENESS);
	say("liveness (0x04): wrote 0x%08x, read 0x%08x (expect ~value = 0x%08x)\n", probe, back,
	    ~probe);
	if (back != ~probe) {
		errno = 0;
		fail("liveness check: device did not invert the value");
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Stage: the device computes n! in the background; poll the status register until done. */
static void stage_factorial(struct vfio *v, unsigned int n)
{
	uint32_t expect = 1, got;
	double deadline = now() + 5;

	say("== factorial %u ==\n", n);
	for (unsigned int i = 2; i <= n; i++)
		expect *= i; /* 32-bit register: wraps like the device does */
	wr32(v, EDU_REG_FACTORIAL, n);
	while (rd32(v, EDU_REG_STATUS) & EDU_STATUS_COMPUTING) {
		if (now() > deadline) {
			errno = 0;
			fail("factorial: device still computing after 5 s");
		}
		usleep(1000);
	}
	got = rd32(v, EDU_REG_FACTORIAL);
	say("device says %u! = %u (expected %u)\n", n, got, expect);
	if (got != expect) {
		errno = 0;
		fail("factorial mismatch");
	}
}

/* Start one edu DMA transfer and wait for the engine to go idle. */
static void edu_dma(struct vfio *v, uint64_t src, uint64_t dst, uint32_t count, uint32_t cmd)
{
	double deadline = now() + 5;

	wr64(v, EDU_REG_DMA_SRC, src);
	wr64(v, EDU_REG_DMA_DST, dst);
	wr32(v, EDU_REG_DMA_COUNT, count);
	wr32(v, EDU_REG_DMA_CMD, cmd | EDU_DMA_START);
	while (rd32(v, EDU_REG_DMA_CMD) & EDU_DMA_START) {
		if (now() > deadline) {
			errno = 0;
			fail("DMA still busy after 5 s");
		}
		usleep(1000);
	}
}

/*
 * A PCI device may only master the bus (do DMA, and send MSIs, which are memory writes too) once
 * its driver allows it. Config space is not mmapped: vfio-pci checks each access to it.
 */
static void enable_bus_master(struct vfio *v)
{
	struct vfio_region_info cfg = region_info(v, VFIO_PCI_CONFIG_REGION_INDEX);
	uint16_t command;

	if (pread(v->device, &command, 2, cfg.offset + PCI_COMMAND) != 2)
		fail("read PCI_COMMAND from config space");
	command |= PCI_COMMAND_MASTER;
	if (pwrite(v->device, &command, 2, cfg.offset + PCI_COMMAND) != 2)
		fail("write PCI_COMMAND");
	say("bus mastering enabled (PCI_COMMAND = 0x%04x)\n", command);
}

/*
 * Stage: DMA through the IOMMU. We map one page-aligned buffer at DMA_IOVA; the device only
 * ever sees IOVAs, which the (v)IOMMU translates to our buffer's physical pages.
 */
static void stage_dma(struct vfio *v)
{
	size_t len = 2 * 4096; /* first page: source, second page: destination */
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap) };
	uint8_t *buf, *src, *dst;

	say("== dma ==\n");
	enable_bus_master(v);

	buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		fail("mmap DMA buffer");
	src = buf;
	dst = buf + 4096;
	for (size_t i = 0; i < DMA_BYTES; i++)
		src[i] = (uint8_t)(i * 7 + 3);
	memset(dst, 0, 4096);

	/* VFIO pins the pages and programs the IOMMU: IOVA -> our buffer. */
	map.vaddr = (uintptr_t)buf;
	map.iova = DMA_IOVA;
	map.size = len;
	map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	if (ioctl(v->container, VFIO_IOMMU_MAP_DMA, &map))
		fail("VFIO_IOMMU_MAP_DMA");
	say("mapped %zu bytes at user address %p to IOVA 0x%x\n", len, (void *)buf, DMA_IOVA);

	edu_dma(v, DMA_IOVA, EDU_DMA_BUFFER, DMA_BYTES, 0);
	say("DMA 1: RAM (IOVA 0x%x) -> device buffer, %d bytes: done\n", DMA_IOVA, DMA_BYTES);
	edu_dma(v, EDU_DMA_BUFFER, DMA_IOVA + 4096, DMA_BYTES, EDU_DMA_TO_RAM);
	say("DMA 2: device buffer -> RAM (IOVA 0x%x), %d bytes: done\n", DMA_IOVA + 4096,
	    DMA_BYTES);

	if (memcmp(src, dst, DMA_BYTES)) {
		size_t i = 0;
		while (src[i] == dst[i])
			i++;
		errno = 0;
		fail("DMA round trip MISMATCH at byte %zu (sent 0x%02x, got 0x%02x)", i, src[i],
		     dst[i]);
	}
	say("DMA round trip of %d bytes through the IOMMU: OK\n", DMA_BYTES);

	unmap.iova = DMA_IOVA;
	unmap.size = len;
	if (ioctl(v->container, VFIO_IOMMU_UNMAP_DMA, &unmap))
		fail("VFIO_IOMMU_UNMAP_DMA");
	munmap(buf, len);
}

/* Point MSI vector 0 of the device at an eventfd (or, with efd -1, take it away again). */
static void set_msi_eventfd(struct vfio *v, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (struct vfio_irq_set *)buf;

	*set = (struct vfio_irq_set){ .argsz = sizeof(buf), .index = VFIO_PCI_MSI_IRQ_INDEX,
				      .flags = VFIO_IRQ_SET_ACTION_TRIGGER };
	if (efd >= 0) {
		set->flags |= VFIO_IRQ_SET_DATA_EVENTFD;
		set->count = 1;
		memcpy(set->data, &efd, sizeof(int));
	} else {
		set->flags |= VFIO_IRQ_SET_DATA_NONE; /* count 0: disable MSI */
		set->argsz = sizeof(*set);
	}
	if (ioctl(v->device, VFIO_DEVICE_SET_IRQS, set))
		fail("VFIO_DEVICE_SET_IRQS(MSI, %s)", efd >= 0 ? "eventfd" : "off");
}

/*
 * Stage: interrupts. vfio-pci enables MSI on the device and signals our eventfd from its
 * interrupt handler; the eventfd's counter says how many interrupts arrived since the last read.
 */
static void stage_irq(struct vfio *v)
{
	uint32_t raise = 0x42, status;
	uint64_t count;
	struct pollfd pfd;
	int efd;

	say("== irq ==\n");
	enable_bus_master(v);
	efd = eventfd(0, EFD_NONBLOCK);
	if (efd < 0)
		fail("eventfd");
	set_msi_eventfd(v, efd);
	say("MSI vector 0 -> eventfd %d (VFIO_DEVICE_SET_IRQS)\n", efd);
	if (read(efd, &count, sizeof(count)) == sizeof(count)) {
		errno = 0;
		fail("the eventfd counted %" PRIu64 " interrupt(s) before any was raised", count);
	}
	wr32(v, EDU_REG_IRQ_RAISE, raise);
	say("wrote 0x%02x to the raise register (0x60)\n", raise);
	pfd = (struct pollfd){ .fd = efd, .events = POLLIN };
	if (poll(&pfd, 1, 5000) != 1) {
		errno = 0;
		fail("no interrupt within 5 s");
	}
	if (read(efd, &count, sizeof(count)) != sizeof(count))
		fail("read eventfd");
	status = rd32(v, EDU_REG_IRQ_STATUS);
	say("eventfd: %" PRIu64 " interrupt(s); IRQ status (0x24) = 0x%02x\n", count, status);
	if (status != raise) {
		errno = 0;
		fail("IRQ status 0x%x, expected 0x%x", status, raise);
	}
	wr32(v, EDU_REG_IRQ_ACK, status);
	status = rd32(v, EDU_REG_IRQ_STATUS);
	say("acknowledged (0x64); IRQ status now 0x%02x\n", status);
	if (status) {
		errno = 0;
		fail("IRQ status did not clear");
	}
	set_msi_eventfd(v, -1);
	close(efd);
}

/*
 * Stage: a DMA fault. The device is told to read from an IOVA nobody mapped; the IOMMU has no
 * translation for it, so the read never reaches RAM and the IOMMU records a fault (the guest
 * kernel's DMAR driver logs it). We fill the device buffer first, then look at what the faulting
 * read left in it.
 */
static void stage_fault(struct vfio *v)
{
	size_t len = 2 * 4096;
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap) };
	uint8_t *buf;
	size_t same = 0, zero = 0;

	say("== fault ==\n");
	buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		fail("mmap DMA buffer");
	memset(buf, 0xa5, 4096);
	memset(buf + 4096, 0x11, 4096);
	map.vaddr = (uintptr_t)buf;
	map.iova = DMA_IOVA;
	map.size = len;
	map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	if (ioctl(v->container, VFIO_IOMMU_MAP_DMA, &map))
		fail("VFIO_IOMMU_MAP_DMA");
	say("mapped IOVA 0x%x-0x%zx only\n", DMA_IOVA, DMA_IOVA + len - 1);

	edu_dma(v, DMA_IOVA, EDU_DMA_BUFFER, DMA_BYTES, 0);
	say("device buffer filled with 0xa5 from IOVA 0x%x\n", DMA_IOVA);
	edu_dma(v, FAULT_IOVA, EDU_DMA_BUFFER, DMA_BYTES, 0);
	say("DMA from unmapped IOVA 0x%x -> device buffer: the engine reports done\n", FAULT_IOVA);
	edu_dma(v, EDU_DMA_BUFFER, DMA_IOVA + 4096, DMA_BYTES, EDU_DMA_TO_RAM);
	for (size_t i = 0; i < DMA_BYTES; i++) {
		same += buf[4096 + i] == 0xa5;
		zero += buf[4096 + i] == 0;
	}
	if (same == DMA_BYTES)
		say("device buffer still holds 0xa5: the faulting read brought nothing in\n");
	else if (zero == DMA_BYTES)
		say("device buffer now holds zeros: the faulting read returned no data\n");
	else {
		errno = 0;
		fail("device buffer holds other data (%zu of %d bytes 0xa5): memory leaked past the IOMMU",
		     same, DMA_BYTES);
	}
	unmap.iova = DMA_IOVA;
	unmap.size = len;
	if (ioctl(v->container, VFIO_IOMMU_UNMAP_DMA, &unmap))
		fail("VFIO_IOMMU_UNMAP_DMA");
	munmap(buf, len);
	say("the IOMMU recorded the fault: see dmesg | grep DMAR\n");
}

/*
 * Stage: I/O on a mediated device. mtty has no hardware: each pread/pwrite on a region of the
 * device fd calls into mtty's emulation in the kernel. Its UART loops transmitted bytes back into
 * its receive FIFO, so what we write to the data register we can read back from it.
 */
static void stage_uart(struct vfio *v, const char *text)
{
	struct vfio_region_info r = region_info(v, VFIO_PCI_BAR0_REGION_INDEX);
	size_t n = strlen(text);
	char got[UART_FIFO_BYTES + 1];
	size_t len = 0;
	uint8_t lsr;

	say("== uart ==\n");
	if (!n || n > UART_FIFO_BYTES) {
		errno = 0;
		fail("give 1 to %d bytes of text (the FIFO's size)", UART_FIFO_BYTES);
	}
	if (r.size < 8) {
		errno = 0;
		fail("BAR0 is 0x%" PRIx64 " bytes; not an mtty port", (uint64_t)r.size);
	}
	for (size_t i = 0; i < n; i++)
		if (pwrite(v->device, text + i, 1, r.offset + UART_DATA) != 1)
			fail("pwrite data register");
	say("wrote %zu byte(s) to the data register (BAR0 + %d) with pwrite\n", n, UART_DATA);
	for (;;) {
		if (pread(v->device, &lsr, 1, r.offset + UART_LSR) != 1)
			fail("pread line status register");
		if (!(lsr & UART_LSR_DATA_READY) || len == UART_FIFO_BYTES)
			break;
		if (pread(v->device, got + len, 1, r.offset + UART_DATA) != 1)
			fail("pread data register");
		len++;
	}
	got[len] = 0;
	say("read back %zu byte(s) while the line status register (BAR0 + %d) said data ready: \"%s\"\n",
	    len, UART_LSR, got);
	if (len != n || memcmp(got, text, n)) {
		errno = 0;
		fail("read back something else than was written");
	}
}

/* Stage: keep the device fd open, so that a removal of the device has to wait for us. */
static void stage_hold(struct vfio *v, unsigned int seconds)
{
	say("== hold ==\nholding %s open (device fd %d) for %u s\n", v->bdf, v->device, seconds);
	sleep(seconds);
	say("closing %s\n", v->bdf);
	close(v->device);
}

/* "all" runs CONTAINER..DMA; the stages after it build on those but are run one at a time. */
enum stage { CONTAINER, GROUP, IOMMU, DEVICE, REGIONS, IRQS, BAR0, FACTORIAL, DMA, IRQ, FAULT,
	     ALL, UART, HOLD, NSTAGES };
static const char *stage_names[] = { "container", "group", "iommu", "device", "regions",
				     "irqs", "bar0", "factorial", "dma", "irq", "fault", "all",
				     "uart", "hold" };

static void usage(void)
{
	fprintf(stderr,
		"usage: vfio-edu container | group [N] | iommu | device [DEV] | regions [DEV] |\n"
		"                irqs [DEV] |\n"
		"                bar0 | factorial <n> | dma | all |\n"
		"                irq | fault | uart DEV TEXT | hold DEV SECONDS\n");
	exit(2);
}

/* A non-negative decimal number, or a usage error. */
static unsigned int number_arg(const char *arg)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(arg, &end, 10);
	if (errno || end == arg || *end || n < 0 || n > INT_MAX)
		usage();
	return (unsigned int)n;
}

/* Does running `target` need stage `s` first? Listing stages, the factorial and the interrupt
 * are never prerequisites; the fault stage wants the DMA stage's proof that mapped DMA works. */
static bool prerequisite(int s, int target)
{
	if (s == REGIONS || s == IRQS || s == FACTORIAL || s == IRQ)
		return false;
	if (target == UART || target == HOLD)
		return s <= DEVICE;
	return s != DMA || target == FAULT;
}

int main(int argc, char **argv)
{
	struct vfio v = { .container = -1, .group = -1, .device = -1, .group_number = -1 };
	unsigned int factorial_n = 10, seconds = 0;
	const char *text = NULL;
	int target = -1;

	if (argc < 2)
		usage();
	for (int i = 0; i < NSTAGES; i++)
		if (!strcmp(argv[1], stage_names[i]))
			target = i;
	if (target < 0)
		usage();

	if (target == GROUP && argc > 2)
		v.group_number = (int)number_arg(argv[2]);
	/* Any VFIO device with PCI regions works up to the irqs stage, e.g. an mdev by UUID. */
	if ((target == DEVICE || target == REGIONS || target == IRQS) && argc > 2)
		snprintf(v.bdf, sizeof(v.bdf), "%s", argv[2]);
	if (target == UART || target == HOLD) {
		if (argc != 4)
			usage();
		snprintf(v.bdf, sizeof(v.bdf), "%s", argv[2]);
		if (target == UART)
			text = argv[3];
		else
			seconds = number_arg(argv[3]);
	}
	if (target == FACTORIAL) {
		if (argc < 3)
			usage();
		factorial_n = strtoul(argv[2], NULL, 0);
	}
	if (!v.bdf[0])
		find_edu(&v);
	if (v.group_number < 0)
		v.group_number = iommu_group_of(v.bdf);
	if (target == ALL)
		printf("edu device %s in IOMMU group %d\n", v.bdf, v.group_number);

	/* Replay the stages before the target quietly, then run the target verbosely. */
	for (int s = CONTAINER; s < NSTAGES; s++) {
		if (target == ALL ? s > DMA : s > target)
			break;
		if (target != ALL && s < target && !prerequisite(s, target))
			continue;
		verbose = (target == ALL || s == target);
		switch (s) {
		case CONTAINER: stage_container(&v); break;
		case GROUP: stage_group(&v); break;
		case IOMMU: stage_iommu(&v); break;
		case DEVICE: stage_device(&v); break;
		case REGIONS: stage_regions(&v); break;
		case IRQS: stage_irqs(&v); break;
		case BAR0: stage_bar0(&v); break;
		case FACTORIAL: stage_factorial(&v, factorial_n); break;
		case DMA: stage_dma(&v); break;
		case IRQ: stage_irq(&v); break;
		case FAULT: stage_fault(&v); break;
		case UART: stage_uart(&v, text); break;
		case HOLD: stage_hold(&v, seconds); break;
		}
	}
	verbose = true;
	say("vfio-edu: %s OK\n", target == ALL ? "all stages" : stage_names[target]);
	return 0;
}

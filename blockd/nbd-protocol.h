/* SPDX-License-Identifier: MIT
 *
 * nbd-protocol.h - constants and wire layouts of the NBD protocol
 * (doc/proto.md of the NBD project), server side.
 *
 * DESIGN: every number here is the one the specification gives; the
 * structs are the exact wire layouts (packed, big-endian fields), so a
 * header can be read or written with one call and converted with
 * be16toh/be32toh/be64toh.  Only what vbk-blockd speaks is listed:
 * fixed newstyle negotiation, no oldstyle.
 */
#ifndef VBK_NBD_PROTOCOL_H
#define VBK_NBD_PROTOCOL_H

#include <stdint.h>

/* ---- Handshake ---------------------------------------------------------- */

#define NBD_MAGIC              UINT64_C (0x4e42444d41474943)  /* "NBDMAGIC" */
#define NBD_IHAVEOPT           UINT64_C (0x49484156454F5054)  /* "IHAVEOPT" */
#define NBD_REP_MAGIC          UINT64_C (0x3e889045565a9)

/* Handshake flags (server, 16 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)

/* Client flags (32 bits). */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_RESIZE       (1u << 9)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Options. */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_PEEK_EXPORT       4
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

/* Option replies. */
#define NBD_REP_ACK               1u
#define NBD_REP_SERVER            2u
#define NBD_REP_INFO              3u
#define NBD_REP_META_CONTEXT      4u
#define NBD_REP_FLAG_ERROR        (1u << 31)
#define NBD_REP_ERR_UNSUP         (NBD_REP_FLAG_ERROR + 1)
#define NBD_REP_ERR_POLICY        (NBD_REP_FLAG_ERROR + 2)
#define NBD_REP_ERR_INVALID       (NBD_REP_FLAG_ERROR + 3)
#define NBD_REP_ERR_PLATFORM      (NBD_REP_FLAG_ERROR + 4)
#define NBD_REP_ERR_TLS_REQD      (NBD_REP_FLAG_ERROR + 5)
#define NBD_REP_ERR_UNKNOWN       (NBD_REP_FLAG_ERROR + 6)
#define NBD_REP_ERR_SHUTDOWN      (NBD_REP_FLAG_ERROR + 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR + 8)
#define NBD_REP_ERR_TOO_BIG       (NBD_REP_FLAG_ERROR + 9)

/* NBD_REP_INFO types. */
#define NBD_INFO_EXPORT           0
#define NBD_INFO_NAME             1
#define NBD_INFO_DESCRIPTION      2
#define NBD_INFO_BLOCK_SIZE       3

/* Strings (names, messages) MUST be no longer than this. */
#define NBD_MAX_STRING            4096

/* The base:allocation metadata context. */
#define NBD_META_BASE_ALLOCATION  "base:allocation"
#define NBD_STATE_HOLE            (1u << 0)
#define NBD_STATE_ZERO            (1u << 1)

struct nbd_new_handshake {
  uint64_t nbdmagic;            /* NBD_MAGIC */
  uint64_t version;             /* NBD_IHAVEOPT */
  uint16_t gflags;              /* handshake flags */
} __attribute__ ((packed));

struct nbd_new_option {
  uint64_t version;             /* NBD_IHAVEOPT */
  uint32_t option;
  uint32_t optlen;
} __attribute__ ((packed));

struct nbd_fixed_new_option_reply {
  uint64_t magic;               /* NBD_REP_MAGIC */
  uint32_t option;
  uint32_t reply;
  uint32_t replylen;
} __attribute__ ((packed));

/* Reply to NBD_OPT_EXPORT_NAME (followed by 124 zeroes unless
 * NBD_FLAG_C_NO_ZEROES). */
struct nbd_export_name_reply {
  uint64_t exportsize;
  uint16_t eflags;
} __attribute__ ((packed));

struct nbd_info_export {
  uint16_t info;                /* NBD_INFO_EXPORT */
  uint64_t exportsize;
  uint16_t eflags;
} __attribute__ ((packed));

struct nbd_info_block_size {
  uint16_t info;                /* NBD_INFO_BLOCK_SIZE */
  uint32_t minimum;
  uint32_t preferred;
  uint32_t maximum;
} __attribute__ ((packed));

/* ---- Transmission ------------------------------------------------------- */

#define NBD_REQUEST_MAGIC           0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC      0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC  0x668e33efu

/* Commands. */
#define NBD_CMD_READ          0
#define NBD_CMD_WRITE         1
#define NBD_CMD_DISC          2
#define NBD_CMD_FLUSH         3
#define NBD_CMD_TRIM          4
#define NBD_CMD_CACHE         5
#define NBD_CMD_WRITE_ZEROES  6
#define NBD_CMD_BLOCK_STATUS  7

/* Command flags. */
#define NBD_CMD_FLAG_FUA       (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBD_CMD_FLAG_DF        (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)

/* Structured reply flags and types. */
#define NBD_REPLY_FLAG_DONE          (1u << 0)
#define NBD_REPLY_TYPE_NONE          0
#define NBD_REPLY_TYPE_OFFSET_DATA   1
#define NBD_REPLY_TYPE_OFFSET_HOLE   2
#define NBD_REPLY_TYPE_BLOCK_STATUS  5
#define NBD_REPLY_TYPE_ERROR         ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET  ((1u << 15) + 2)

/* Error values (the error field of replies). */
#define NBD_SUCCESS    0
#define NBD_EPERM      1
#define NBD_EIO        5
#define NBD_ENOMEM     12
#define NBD_EINVAL     22
#define NBD_ENOSPC     28
#define NBD_EOVERFLOW  75
#define NBD_ENOTSUP    95
#define NBD_ESHUTDOWN  108

struct nbd_request {
  uint32_t magic;               /* NBD_REQUEST_MAGIC */
  uint16_t flags;
  uint16_t type;
  uint64_t handle;
  uint64_t offset;
  uint32_t count;
} __attribute__ ((packed));

struct nbd_simple_reply {
  uint32_t magic;               /* NBD_SIMPLE_REPLY_MAGIC */
  uint32_t error;
  uint64_t handle;
} __attribute__ ((packed));

struct nbd_structured_reply {
  uint32_t magic;               /* NBD_STRUCTURED_REPLY_MAGIC */
  uint16_t flags;
  uint16_t type;
  uint64_t handle;
  uint32_t length;              /* of the payload that follows */
} __attribute__ ((packed));

struct nbd_structured_reply_offset_data {
  uint64_t offset;              /* data follows */
} __attribute__ ((packed));

struct nbd_structured_reply_offset_hole {
  uint64_t offset;
  uint32_t length;
} __attribute__ ((packed));

struct nbd_structured_reply_error {
  uint32_t error;
  uint16_t len;                 /* message follows */
} __attribute__ ((packed));

struct nbd_block_descriptor {
  uint32_t length;
  uint32_t status_flags;
} __attribute__ ((packed));

#endif /* VBK_NBD_PROTOCOL_H */

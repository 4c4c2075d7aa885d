/* exit_codes.h: the exit code of each ossc status (enum ossc_status in ossc.h). error.c's
 * table gives them to the commands (ossc_exit_code, which Python reads too); the shim, which
 * fails before main and never links libossc, uses them directly. */
#ifndef OSSC_EXIT_CODES_H
#define OSSC_EXIT_CODES_H

#define OSSC_EXIT_OK 0
#define OSSC_EXIT_CONFIG 3
#define OSSC_EXIT_CREDENTIALS 4
#define OSSC_EXIT_AUTH 5
#define OSSC_EXIT_NOT_FOUND 6
#define OSSC_EXIT_NETWORK 7
#define OSSC_EXIT_PROTOCOL 8
#define OSSC_EXIT_INTEGRITY 9
#define OSSC_EXIT_IO 10
#define OSSC_EXIT_SERVER 11
#define OSSC_EXIT_NOMEM 12
#define OSSC_EXIT_CONFLICT 13
#define OSSC_EXIT_NO_SPACE 14
#define OSSC_EXIT_CANCELLED 130

#endif

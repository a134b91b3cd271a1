// When things happen to the database, in one place, so that they never meet.
//
// All times UTC. RDS's daily backup window and weekly maintenance window come
// first, in the quiet hours; the three rotations follow, each in a window of
// its own (Secrets Manager rotates at a moment it picks inside the window):
//
//   00:00-00:30  RDS backup (daily)
//   01:00-01:30  RDS maintenance (Sundays): minor upgrades, patches, failover
//   04:00-06:00  app secret      (alternating users: logs in as the master)
//   08:00-10:00  owner secret
//   12:00-14:00  master secret   (never while the app's rotation may use it)
//
// The rotations run on the same day (daily, Tuesdays, or the first Tuesday of
// the month), hours apart: an operator sees one rotation day, and a failed
// rotation is retried by Secrets Manager inside its own window, not into the
// next one's.

import type { RotationCadence } from './settings';

export type RotatedSecret = 'app' | 'owner' | 'master';

/** Hour (UTC) each secret's rotation window opens. */
export const ROTATION_WINDOW_START: Record<RotatedSecret, number> = { app: 4, owner: 8, master: 12 };
/** Length of every rotation window (Secrets Manager's `Duration`). */
export const ROTATION_WINDOW_HOURS = 2;

export const BACKUP_WINDOW = '00:00-00:30';
export const MAINTENANCE_WINDOW = 'sun:01:00-sun:01:30';

export interface RotationSchedule {
  /** Secrets Manager `ScheduleExpression`: cron(minutes hours day-of-month month day-of-week year). */
  readonly scheduleExpression: string;
  /** Secrets Manager `Duration`: the window's length. */
  readonly duration: string;
}

export function rotationSchedule(secret: RotatedSecret, cadence: RotationCadence): RotationSchedule {
  const hour = ROTATION_WINDOW_START[secret];
  const days = cadence === 1 ? '* * ? *' : cadence === 7 ? '? * TUE *' : '? * TUE#1 *';
  return { scheduleExpression: `cron(0 ${hour} ${days})`, duration: `${ROTATION_WINDOW_HOURS}h` };
}

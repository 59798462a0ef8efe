import busboy from 'busboy';
import type { Platform } from '../../platform';
import type { Request } from 'express';
import { z } from 'zod';
import { createDocuments, DOCUMENT_LIMITS } from '../../domain/documents/documents';
import { detectFile, getDocumentFile } from '../../domain/files/files';
import { AppError, badRequest } from '../../errors';
import { repliedId } from '../audit-trail';
import type { Api } from '../route';
import { documentInput, documentSummarySchema, idParams } from '../schemas';
import { parseInput } from '../validation';

const tag = 'Documents';

/** Room for the form's other fields and the multipart framing around the file. */
const FORM_OVERHEAD_BYTES = 256 * 1024;

/** The form fields beside the file, validated as a JSON document's. */
const uploadFields = z
  .object({
    title: documentInput.shape.title.optional(),
    tags: documentInput.shape.tags,
    metadata: documentInput.shape.metadata,
  })
  .strict();

interface Upload {
  fields: Record<string, unknown>;
  file: { filename: string; data: Buffer };
}

const tooLarge = (limit: number) =>
  new AppError(413, 'payload_too_large', `The file may be at most ${limit} bytes (UPLOAD_MAX_BYTES).`, { limit_bytes: limit });

/**
 * Reads a multipart form with one file in `file`, refusing as it streams:
 * a declared length or a file past `maxBytes` is answered 413 at once and
 * the connection closed, so the rest of the body is never read.
 */
function readUpload(req: Request, maxBytes: number): Promise<Upload> {
  const giveUp = (error: AppError) => {
    // Without this Node would read the rest of a large body to keep the connection.
    req.res?.setHeader('Connection', 'close');
    return error;
  };
  if (Number(req.headers['content-length'] ?? 0) > maxBytes + FORM_OVERHEAD_BYTES) return Promise.reject(giveUp(tooLarge(maxBytes)));
  return new Promise((resolve, reject) => {
    let form: busboy.Busboy;
    try {
      form = busboy({ headers: req.headers, limits: { fileSize: maxBytes, files: 1, fields: DOCUMENT_LIMITS.tags + 2, fieldSize: 128 * 1024, parts: DOCUMENT_LIMITS.tags + 3 } });
    } catch {
      reject(badRequest('Send the file as multipart/form-data with a boundary.'));
      return;
    }
    let failed = false;
    const fail = (error: AppError) => {
      if (failed) return;
      failed = true;
      req.unpipe(form);
      reject(error);
    };
    const fields: Record<string, unknown> = {};
    let file: Upload['file'] | null = null;
    form.on('field', (name, value, info) => {
      if (info.valueTruncated) return fail(badRequest(`The field "${name}" is too long.`, { field: name }));
      if (name === 'tags' || name === 'tags[]') fields.tags = [...((fields.tags as string[]) ?? []), value];
      else if (name === 'metadata') {
        try {
          fields.metadata = JSON.parse(value);
        } catch {
          fail(badRequest('"metadata" must be a JSON object as text.', { field: 'metadata' }));
        }
      } else fields[name] = value;
    });
    form.on('file', (name, stream, info) => {
      if (name !== 'file') {
        stream.resume();
        return fail(badRequest(`The file goes in the field "file", not "${name}".`, { field: name }));
      }
      const parts: Buffer[] = [];
      stream.on('data', (part: Buffer) => parts.push(part));
      stream.on('limit', () => fail(giveUp(tooLarge(maxBytes))));
      stream.on('end', () => {
        if (!stream.truncated) file = { filename: info.filename || 'upload', data: Buffer.concat(parts) };
      });
    });
    form.on('filesLimit', () => fail(badRequest('Send one file per upload.')));
    form.on('fieldsLimit', () => fail(badRequest('Too many fields.')));
    form.on('partsLimit', () => fail(badRequest('Too many parts.')));
    form.on('error', (error: Error) => fail(badRequest(`The multipart body is malformed: ${error.message}`)));
    form.on('close', () => {
      if (failed) return;
      if (!file) return fail(badRequest('The form has no file: send it in the field "file".', { field: 'file' }));
      resolve({ fields, file });
    });
    req.pipe(form);
  });
}

/** What the uploads routes use of the platform, wired in by the app (src/http/app.ts). */
export type UploadsServices = Pick<Platform, 'config' | 'db' | 'documentDeps'>;

export function uploadRoutes(api: Api, services: UploadsServices): void {
  api.add({
    method: 'post', path: '/api/documents/upload', operationId: 'uploadDocument', summary: 'Upload a file (PDF, DOCX, HTML, Markdown, text, code); it is parsed and indexed on the workers', tag,
    auth: { scope: 'documents:write', tenant: 'required' },
    responses: {
      202: { description: 'Accepted and queued for indexing, as POST /api/documents', schema: documentSummarySchema },
      413: { description: 'The file is larger than UPLOAD_MAX_BYTES (answered while it streams in), or a text file\'s content over 5 MB' },
      415: { description: 'Neither PDF, DOCX nor UTF-8 text of a supported kind, judged by its bytes and name' },
    },
    audit: { action: 'document.upload', target: repliedId },
    handler: async ({ ctx, req }) => {
      if (!req.is('multipart/form-data')) throw new AppError(415, 'unsupported_media_type', 'Send the file as multipart/form-data in the field "file".');
      const upload = await readUpload(req, services.config.UPLOAD_MAX_BYTES);
      const fields = parseInput(uploadFields, upload.fields, 'body');
      const { filename, data } = upload.file;
      const detected = detectFile(filename, data);
      if (detected.kind === 'text' && data.length > DOCUMENT_LIMITS.contentBytes) {
        throw new AppError(413, 'payload_too_large', `A text file's content may be at most ${DOCUMENT_LIMITS.contentBytes} bytes.`, { limit_bytes: DOCUMENT_LIMITS.contentBytes });
      }
      const [document] = await createDocuments(
        services.documentDeps(),
        ctx.tenant!.id,
        [
          {
            title: fields.title ?? (filename.replace(/\.[^.]+$/, '').trim().slice(0, DOCUMENT_LIMITS.titleChars) || filename.slice(0, DOCUMENT_LIMITS.titleChars)),
            // A PDF or DOCX has its text extracted on the worker; text is stored as it came.
            content: detected.kind === 'text' ? detected.text : '',
            content_type: detected.kind === 'text' ? detected.contentType : detected.kind,
            tags: fields.tags,
            metadata: fields.metadata,
            file: { filename, mediaType: detected.mediaType, data },
          },
        ],
        ctx.tenant!.quotas,
      );
      return { status: 202, body: document, headers: { Location: `/api/documents/${document.id}` } };
    },
  });
  api.add({
    method: 'get', path: '/api/documents/:id/file', operationId: 'getDocumentFile', summary: 'The original of an uploaded document, with its type', tag,
    auth: { scope: 'documents:read', tenant: 'required' },
    params: idParams,
    responses: { 200: { description: 'The file as uploaded' }, 404: { description: 'No such document, or one posted as JSON (no file)' } },
    handler: async ({ params, ctx }) => {
      const file = await getDocumentFile(services.db.knex, ctx.tenant!.id, params.id);
      const data = Buffer.from(file.data);
      return {
        status: 200,
        headers: {
          'Content-Type': file.media_type,
          'Content-Length': String(data.length),
          'Content-Disposition': `attachment; filename*=UTF-8''${encodeURIComponent(file.filename)}`,
        },
        stream: async (res) => {
          res.write(data);
        },
      };
    },
  });
}

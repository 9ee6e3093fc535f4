using System.Text;
using System.Text.Json;
using GptSharp.Generation;
using GptSharp.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace GptSharp.Serving;

/// <summary>
/// OpenAI's wire format over a <see cref="BatchScheduler"/>: <c>GET /v1/models</c>, <c>POST /v1/completions</c> and
/// <c>POST /v1/chat/completions</c>, whole responses or server-sent events ending with <c>data: [DONE]</c>.
/// </summary>
internal sealed class OpenAiApi(BatchScheduler scheduler, string modelId)
{
    private static readonly long Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    private static readonly Gpt2Tokenizer Tokenizer = Gpt2Tokenizer.Instance;

    public void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/models", (HttpContext context) => WriteJsonAsync(context, json =>
        {
            json.WriteString("object", "list");
            json.WriteStartArray("data");
            json.WriteStartObject();
            WriteModel(json);
            json.WriteEndObject();
            json.WriteEndArray();
        }));
        app.MapGet("/v1/models/{id}", (HttpContext context, string id) => id == modelId
            ? WriteJsonAsync(context, WriteModel)
            : ApiException.WriteAsync(context, 404, $"The model '{id}' does not exist; this server serves '{modelId}'.", "model", "model_not_found"));
        app.MapPost("/v1/completions", context => CompleteAsync(context, chat: false));
        app.MapPost("/v1/chat/completions", context => CompleteAsync(context, chat: true));
    }

    private void WriteModel(Utf8JsonWriter json)
    {
        json.WriteString("id", modelId);
        json.WriteString("object", "model");
        json.WriteNumber("created", Created);
        json.WriteString("owned_by", "gptsharp");
        json.WriteNumber("context_length", scheduler.Config.ContextLength);
        json.WriteString("chat_template", ChatTemplate.Text);
        json.WriteStartArray("chat_stop");
        foreach (string stop in ChatTemplate.StopTexts) json.WriteStringValue(stop);
        json.WriteEndArray();
    }

    private async Task CompleteAsync(HttpContext context, bool chat)
    {
        JsonElement body;
        try
        {
            using var document = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted);
            body = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new ApiException(400, $"The request body is not valid JSON: {e.Message}", null, "invalid_json");
        }
        int contextLength = scheduler.Config.ContextLength, vocabSize = scheduler.Config.VocabSize;
        var request = chat ? OpenAiRequests.Chat(body, modelId, contextLength, vocabSize) : OpenAiRequests.Completion(body, modelId, contextLength, vocabSize);
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (!request.Stream)
        {
            var result = await TextCompletion.RunAsync(scheduler, request.Prompt, request.Settings, null, context.RequestAborted);
            await WriteJsonAsync(context, json =>
            {
                WriteHeader(json, id, chat ? "chat.completion" : "text_completion", created);
                json.WriteStartArray("choices");
                foreach (var choice in result.Choices)
                {
                    json.WriteStartObject();
                    json.WriteNumber("index", choice.Index);
                    if (chat)
                    {
                        json.WriteStartObject("message");
                        json.WriteString("role", "assistant");
                        json.WriteString("content", choice.Text.TrimStart());
                        json.WriteNull("refusal");
                        json.WriteEndObject();
                    }
                    else json.WriteString("text", choice.Text);
                    WriteLogprobs(json, choice.Tokens, request.Settings.TopLogprobs, chat);
                    json.WriteString("finish_reason", choice.FinishReason);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                WriteUsage(json, result);
            });
            return;
        }

        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
        var trimmers = new LeadingSpaceTrimmer[request.Settings.Choices];
        for (int i = 0; i < trimmers.Length; i++) trimmers[i] = new LeadingSpaceTrimmer();
        var roleSent = new bool[request.Settings.Choices];
        // Nothing is written before the scheduler accepts the request, so a full queue is still a plain 429.
        var streamed = await TextCompletion.RunAsync(scheduler, request.Prompt, request.Settings, async piece =>
        {
            if (chat && !roleSent[piece.Choice])
            {
                roleSent[piece.Choice] = true;
                await WriteEventAsync(context, json => WriteChunk(json, id, created, piece.Choice, json =>
                {
                    json.WriteString("role", "assistant");
                    json.WriteString("content", "");
                }, null, null, -1));
            }
            string text = chat ? trimmers[piece.Choice].Next(piece.Text) : piece.Text;
            if (text.Length == 0 && piece.Tokens.Count == 0 && piece.FinishReason is null) return;
            await WriteEventAsync(context, json =>
            {
                if (chat)
                    WriteChunk(json, id, created, piece.Choice, json => { if (text.Length > 0 || piece.FinishReason is null) json.WriteString("content", text); },
                        piece.FinishReason, piece.Tokens, request.Settings.TopLogprobs);
                else
                {
                    WriteHeader(json, id, "text_completion", created);
                    json.WriteStartArray("choices");
                    json.WriteStartObject();
                    json.WriteNumber("index", piece.Choice);
                    json.WriteString("text", text);
                    WriteLogprobs(json, piece.Tokens, request.Settings.TopLogprobs, chat: false);
                    if (piece.FinishReason is null) json.WriteNull("finish_reason"); else json.WriteString("finish_reason", piece.FinishReason);
                    json.WriteEndObject();
                    json.WriteEndArray();
                }
            });
        }, context.RequestAborted);
        if (request.IncludeUsage)
            await WriteEventAsync(context, json =>
            {
                WriteHeader(json, id, chat ? "chat.completion.chunk" : "text_completion", created);
                json.WriteStartArray("choices");
                json.WriteEndArray();
                WriteUsage(json, streamed);
            });
        await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private void WriteHeader(Utf8JsonWriter json, string id, string kind, long created)
    {
        json.WriteString("id", id);
        json.WriteString("object", kind);
        json.WriteNumber("created", created);
        json.WriteString("model", modelId);
        json.WriteNull("system_fingerprint");
    }

    private void WriteChunk(Utf8JsonWriter json, string id, long created, int index, Action<Utf8JsonWriter> delta,
        string? finishReason, IReadOnlyList<CompletionToken>? tokens, int topLogprobs)
    {
        WriteHeader(json, id, "chat.completion.chunk", created);
        json.WriteStartArray("choices");
        json.WriteStartObject();
        json.WriteNumber("index", index);
        json.WriteStartObject("delta");
        delta(json);
        json.WriteEndObject();
        if (tokens is null) json.WriteNull("logprobs"); else WriteLogprobs(json, tokens, topLogprobs, chat: true);
        if (finishReason is null) json.WriteNull("finish_reason"); else json.WriteString("finish_reason", finishReason);
        json.WriteEndObject();
        json.WriteEndArray();
    }

    private static void WriteUsage(Utf8JsonWriter json, CompletionResult result)
    {
        json.WriteStartObject("usage");
        json.WriteNumber("prompt_tokens", result.PromptTokens);
        json.WriteNumber("completion_tokens", result.CompletionTokens);
        json.WriteNumber("total_tokens", result.PromptTokens + result.CompletionTokens);
        json.WriteEndObject();
    }

    /// <summary>OpenAI's two log-probability layouts: the completions' parallel arrays and the chat's per-token objects.</summary>
    private static void WriteLogprobs(Utf8JsonWriter json, IReadOnlyList<CompletionToken> tokens, int topLogprobs, bool chat)
    {
        if (topLogprobs < 0) { json.WriteNull("logprobs"); return; }
        json.WriteStartObject("logprobs");
        if (chat)
        {
            json.WriteStartArray("content");
            foreach (var token in tokens)
            {
                json.WriteStartObject();
                WriteTokenEntry(json, token.Id, token.Logprob);
                json.WriteStartArray("top_logprobs");
                foreach (var top in token.Top ?? [])
                {
                    json.WriteStartObject();
                    WriteTokenEntry(json, top.Token, top.Logprob);
                    json.WriteEndObject();
                }
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteNull("refusal");
        }
        else
        {
            json.WriteStartArray("tokens");
            foreach (var token in tokens) json.WriteStringValue(TokenText(token.Id));
            json.WriteEndArray();
            json.WriteStartArray("token_logprobs");
            foreach (var token in tokens) json.WriteNumberValue(token.Logprob);
            json.WriteEndArray();
            json.WriteStartArray("top_logprobs");
            foreach (var token in tokens)
            {
                json.WriteStartObject();
                foreach (var top in token.Top ?? []) json.WriteNumber(TokenText(top.Token), top.Logprob);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteStartArray("text_offset");
            foreach (var token in tokens) json.WriteNumberValue(token.TextOffset);
            json.WriteEndArray();
        }
        json.WriteEndObject();
    }

    private static void WriteTokenEntry(Utf8JsonWriter json, int token, float logprob)
    {
        json.WriteString("token", TokenText(token));
        json.WriteNumber("logprob", logprob);
        json.WriteStartArray("bytes");
        foreach (byte b in Tokenizer.TokenBytes(token)) json.WriteNumberValue(b);
        json.WriteEndArray();
    }

    /// <summary>A token's text; a token holding part of a character shows its bytes as OpenAI does (<c>bytes:\xe2\x80</c>).</summary>
    private static string TokenText(int token)
    {
        var bytes = Tokenizer.TokenBytes(token);
        try { return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes); }
        catch (DecoderFallbackException) { return "bytes:" + string.Concat(bytes.ToArray().Select(b => $"\\x{b:x2}")); }
    }

    private static async Task WriteJsonAsync(HttpContext context, Action<Utf8JsonWriter> write)
    {
        context.Response.ContentType = "application/json";
        await context.Response.Body.WriteAsync(Serialize(write), context.RequestAborted);
    }

    private static async Task WriteEventAsync(HttpContext context, Action<Utf8JsonWriter> write)
    {
        var payload = Serialize(write);
        var buffer = new byte[payload.Length + 8];
        "data: "u8.CopyTo(buffer);
        payload.CopyTo(buffer, 6);
        buffer[^2] = (byte)'\n';
        buffer[^1] = (byte)'\n';
        await context.Response.Body.WriteAsync(buffer, context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private static byte[] Serialize(Action<Utf8JsonWriter> write)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            write(json);
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }
}

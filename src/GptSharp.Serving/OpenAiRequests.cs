using System.Text.Json;

namespace GptSharp.Serving;

/// <summary>
/// Reads OpenAI's request bodies into <see cref="CompletionSettings"/>, naming the parameter of the first bad
/// value (OpenAI's <c>param</c>), so every bad request is a 400 with one clear line.
/// </summary>
internal static class OpenAiRequests
{
    /// <summary>Most choices one request may ask for.</summary>
    public const int MaxChoices = 16;

    public sealed record Parsed(int[] Prompt, CompletionSettings Settings, bool Stream, bool IncludeUsage);

    public static Parsed Completion(JsonElement body, string modelId, int contextLength)
    {
        CheckObject(body);
        CheckModel(body, modelId);
        if (!body.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw Bad("prompt", "you must provide a prompt.");
        int[] ids = PromptIds(prompt);
        if (Bool(body, "echo") == true) throw Bad("echo", "echo is not supported.");
        int? logprobs = Int(body, "logprobs", 0, 20);
        var settings = Common(body, contextLength, defaultMaxTokens: 16) with { TopLogprobs = logprobs ?? -1 };
        return Finish(body, ids, settings, contextLength);
    }

    public static Parsed Chat(JsonElement body, string modelId, int contextLength)
    {
        CheckObject(body);
        CheckModel(body, modelId);
        if (!body.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw Bad("messages", "messages must be a non-empty array of {role, content} objects.");
        var turns = new List<(string, string)>();
        int index = 0;
        foreach (var message in messages.EnumerateArray())
        {
            string param = $"messages[{index++}]";
            if (message.ValueKind != JsonValueKind.Object) throw Bad(param, $"{param} must be an object with role and content.");
            string role = message.TryGetProperty("role", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()!
                : throw Bad(param + ".role", $"{param}.role must be a string.");
            turns.Add((role, Content(message, param + ".content")));
        }
        string transcript;
        try { transcript = ChatTemplate.Format(turns); }
        catch (ArgumentException e) { throw Bad("messages", e.Message); }
        int[] ids = TextCompletion.Encode(transcript);
        bool logprobs = Bool(body, "logprobs") ?? false;
        int? top = Int(body, "top_logprobs", 0, 20);
        if (top is not null && !logprobs) throw Bad("top_logprobs", "top_logprobs needs logprobs set to true.");
        int defaultMax = Math.Max(1, contextLength - ids.Length + 1);
        var settings = Common(body, contextLength, defaultMax) with { TopLogprobs = logprobs ? top ?? 0 : -1 };
        if (Int(body, "max_completion_tokens", 1, int.MaxValue) is { } maxCompletion) settings = settings with { MaxTokens = maxCompletion };
        settings = settings with { Stop = ChatTemplate.WithChatStops(settings.Stop) };
        return Finish(body, ids, settings, contextLength);
    }

    private static Parsed Finish(JsonElement body, int[] ids, CompletionSettings settings, int contextLength)
    {
        if (ids.Length == 0) throw Bad("prompt", "the prompt is empty: give a text to continue.");
        if (ids.Length > contextLength)
            throw new ApiException(400, $"the prompt has {ids.Length} tokens, more than the model's context length ({contextLength}).", "prompt", "context_length_exceeded");
        bool stream = Bool(body, "stream") ?? false;
        bool includeUsage = false;
        if (body.TryGetProperty("stream_options", out var options) && options.ValueKind != JsonValueKind.Null)
        {
            if (options.ValueKind != JsonValueKind.Object) throw Bad("stream_options", "stream_options must be an object.");
            includeUsage = Bool(options, "include_usage", "stream_options.include_usage") ?? false;
        }
        try { settings.ToGenerationOptions(); }
        catch (ArgumentException e) { throw Bad(null, e.Message.Replace("--", "")); }
        return new Parsed(ids, settings, stream, includeUsage);
    }

    private static CompletionSettings Common(JsonElement body, int contextLength, int defaultMaxTokens)
    {
        int? topK = Int(body, "top_k", -1, int.MaxValue);
        return new CompletionSettings
        {
            MaxTokens = Int(body, "max_tokens", 1, int.MaxValue) ?? defaultMaxTokens,
            Temperature = Float(body, "temperature", 0, 2) ?? 1f,
            TopP = Float(body, "top_p", 0, 1, exclusiveMin: true),
            // 0 or −1 = off (vLLM's convention).
            TopK = topK is null or <= 0 ? null : topK,
            MinP = Float(body, "min_p", 0, 1),
            PresencePenalty = Float(body, "presence_penalty", -2, 2) ?? 0f,
            FrequencyPenalty = Float(body, "frequency_penalty", -2, 2) ?? 0f,
            Seed = Seed(body),
            Stop = Stops(body),
            Choices = Int(body, "n", 1, MaxChoices) ?? 1,
        };
    }

    private static void CheckObject(JsonElement body)
    {
        if (body.ValueKind != JsonValueKind.Object) throw Bad(null, "the request body must be a JSON object.");
    }

    private static void CheckModel(JsonElement body, string modelId)
    {
        if (!body.TryGetProperty("model", out var model) || model.ValueKind == JsonValueKind.Null) return;
        if (model.ValueKind != JsonValueKind.String) throw Bad("model", "model must be a string.");
        if (model.GetString() != modelId)
            throw new ApiException(404, $"The model '{model.GetString()}' does not exist; this server serves '{modelId}'.", "model", "model_not_found");
    }

    private static int[] PromptIds(JsonElement prompt)
    {
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String:
                return TextCompletion.Encode(prompt.GetString()!);
            case JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind is JsonValueKind.String or JsonValueKind.Array:
                return PromptIds(prompt[0]);
            case JsonValueKind.Array when prompt.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number):
                return prompt.EnumerateArray().Select(e => e.TryGetInt32(out int id) && id is >= 0 and < 50257 ? id
                    : throw Bad("prompt", $"prompt token {e} is not a GPT-2 token id (0..50256).")).ToArray();
            case JsonValueKind.Array:
                throw Bad("prompt", "one prompt per request: a string, or an array of token ids.");
            default:
                throw Bad("prompt", "prompt must be a string or an array of token ids.");
        }
    }

    private static string Content(JsonElement message, string param)
    {
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null) return "";
        if (content.ValueKind == JsonValueKind.String) return content.GetString()!;
        // The content-parts form: [{"type": "text", "text": "..."}].
        if (content.ValueKind == JsonValueKind.Array)
            return string.Concat(content.EnumerateArray().Select(part =>
                part.ValueKind == JsonValueKind.Object && part.TryGetProperty("type", out var t) && t.ValueEquals("text")
                    && part.TryGetProperty("text", out var text) && text.ValueKind == JsonValueKind.String
                    ? text.GetString()
                    : throw Bad(param, $"{param}: only text parts are supported.")));
        throw Bad(param, $"{param} must be a string or an array of text parts.");
    }

    private static IReadOnlyList<string> Stops(JsonElement body)
    {
        if (!body.TryGetProperty("stop", out var stop) || stop.ValueKind == JsonValueKind.Null) return [];
        string[] stops = stop.ValueKind switch
        {
            JsonValueKind.String => [stop.GetString()!],
            JsonValueKind.Array => stop.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()!
                : throw Bad("stop", "stop must be a string or an array of strings.")).ToArray(),
            _ => throw Bad("stop", "stop must be a string or an array of strings."),
        };
        if (stops.Length > 4) throw Bad("stop", $"stop takes at most 4 texts, got {stops.Length}.");
        if (stops.Any(string.IsNullOrEmpty)) throw Bad("stop", "stop texts must not be empty.");
        return stops;
    }

    private static ulong? Seed(JsonElement body)
    {
        if (!body.TryGetProperty("seed", out var seed) || seed.ValueKind == JsonValueKind.Null) return null;
        if (seed.ValueKind == JsonValueKind.Number && seed.TryGetInt64(out long signed)) return unchecked((ulong)signed);
        if (seed.ValueKind == JsonValueKind.Number && seed.TryGetUInt64(out ulong unsigned)) return unsigned;
        throw Bad("seed", $"seed must be an integer, got {seed.GetRawText()}.");
    }

    private static int? Int(JsonElement body, string name, int min, int max)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int result))
            throw Bad(name, $"{name} must be an integer, got {value.GetRawText()}.");
        if (result < min || result > max)
            throw Bad(name, max == int.MaxValue ? $"{name} must be at least {min}, got {result}." : $"{name} must be in {min}..{max}, got {result}.");
        return result;
    }

    private static float? Float(JsonElement body, string name, float min, float max, bool exclusiveMin = false)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double result))
            throw Bad(name, $"{name} must be a number, got {value.GetRawText()}.");
        if (result < min || result > max || (exclusiveMin && result == min))
            throw Bad(name, $"{name} must be in {(exclusiveMin ? "(" : "[")}{min}, {max}], got {result}.");
        return (float)result;
    }

    private static bool? Bool(JsonElement body, string name, string? param = null)
    {
        if (!body.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Bad(param ?? name, $"{param ?? name} must be true or false, got {value.GetRawText()}."),
        };
    }

    private static ApiException Bad(string? param, string message) => new(400, message, param, param is null ? null : "invalid_value");
}
